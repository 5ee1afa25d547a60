"""What a run records about where it came from: the flattened config, its fingerprint (the semantic
keys only), the git commit, versions, device and process, MLflow's own source tags."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

from study import contract, devices
from study.tracking.store import REPO_ROOT

NON_SEMANTIC = (
    "tracking",
    "hydra",
    "train.verbose",
    "train.callbacks",
    "train.threads",
    "train.steps_per_execution",  # the same steps, several per call into TensorFlow
    "train.time_steps",  # the same steps, timed
    "diagnostics.verdict",
    "question",  # the preset's question, a description
    "criteria",  # the preset's decision rules, read by its report
)
# key -> the value that trains exactly as before the key existed (Keras's own default)
ADDED_KEYS = {
    "model.bn_momentum": 0.99,
    "arm": "none",
    "model.init_scale": 1.0,
    "model.max_pools": 2,
    "model.pool_after": None,
    "model.double_at_pool": True,
    "train.loss": "cross_entropy",
    "data.standardize": False,
    "diagnostics.curvature.every_n_steps": 0,
    "diagnostics.curvature.examples": 1024,
    "diagnostics.curvature.iterations": 20,
    "diagnostics.curvature.top_k": 1,
    "diagnostics.curvature.trace_samples": 0,
}


def source_tags() -> dict[str, str]:
    """MLflow's own source and version tags, so its UI's Source and Version columns fill."""
    commit = git_commit()
    return {
        "mlflow.source.name": "study.train",
        "mlflow.source.type": "LOCAL",
        **({"mlflow.source.git.commit": commit.removesuffix("-dirty")} if commit != "unknown" else {}),
    }


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """{'model': {'depth': 8}} -> {'model.depth': 8}; lists stay values."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def fingerprint(flat: dict[str, object]) -> str:
    """Hash of the semantic config: what is trained, not where it is logged or how it is launched.
    Keys added to the config after runs were recorded are left out while they hold the value that
    reproduces those runs (ADDED_KEYS), so earlier runs of an unchanged cell are still found."""
    keep = {
        k: v
        for k, v in flat.items()
        if not any(k == n or k.startswith(n + ".") for n in NON_SEMANTIC)
        and not (k in ADDED_KEYS and v == ADDED_KEYS[k])
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu() -> str:
    """The CPU's model and the widest vector extension TensorFlow's oneDNN kernels can use: the
    rounding of a run's float sums depends on them, so the same seed can train differently (a deep
    net near the edge of trainability, visibly so) on another kind of CPU."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    widest = next((f for f in ("amx_tile", "avx512f", "avx2", "avx", "sse4_2") if f in flags), "none")
    return f"{model}; {widest}"


def environment_tags() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        contract.GIT_COMMIT: git_commit(),
        contract.TF_VERSION: tf.__version__,
        contract.KERAS_VERSION: keras.__version__,
        contract.PYTHON_VERSION: platform.python_version(),
        contract.DEVICE: devices.describe(),
        contract.CPU: cpu(),
        contract.HOST: platform.node(),
        contract.PID: str(os.getpid()),
    }


def machine() -> dict[str, str]:
    """Where a benchmark ran: commit, versions and device (environment_tags without host and pid)."""
    return {k: v for k, v in environment_tags().items() if k not in (contract.HOST, contract.PID)}
