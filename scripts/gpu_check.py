"""One-minute self-test for a GPU machine: `.venv/bin/python scripts/gpu_check.py`.

It prints what it found:
1. whether TensorFlow sees a GPU, and its model;
2. one default-grid cell (relu_he + adam, depth 8; `size=tiny` with `--tiny`) trained on the GPU, twice
   with `train.deterministic=true`: the same seed must give the same test accuracy and loss;
3. the same cell on the CPU (a child process with the GPUs hidden): seconds a step against the GPU's.
On a machine without a GPU it says so and exits 0; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cell(uri: str, tiny: bool, seed: int = 0) -> dict:
    """One grid cell, trained and recorded in `uri`; its result (test metrics, times, steps)."""
    from hydra import compose, initialize_config_dir

    import study.train  # noqa: F401  (the `repo_root` resolver)
    from study import tracking
    from study.train import train

    overrides = ["experiment=grid", "arm=relu_he", "optimizer=adam", "model.depth=8", f"seed={seed}"]
    overrides += ["train.deterministic=true", "train.verbose=0", f"tracking.uri={uri}", "tracking.cell_figures=false"]
    with initialize_config_dir(str(tracking.REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides + (["size=tiny"] if tiny else []))
    r = train(cfg)
    return {k: r[k] for k in ("test/accuracy", "test/loss", "time/fit_s")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the cell at size=tiny (seconds instead of a minute)")
    ap.add_argument("--cpu-cell", action="store_true", help=argparse.SUPPRESS)  # the child: one cell, as JSON
    a = ap.parse_args()
    if a.cpu_cell:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(cell(f"sqlite:///{tmp}/mlflow.db", a.tiny)))
        return 0

    import tensorflow as tf

    from study import devices

    gpus = tf.config.list_physical_devices("GPU")
    print(f"TensorFlow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}; GPUs: {len(gpus)}")
    if not gpus:
        print("no GPU found: TensorFlow sees none on this machine, so there is nothing to check here (cells train")
        print("on the CPU). On a GPU machine, `make install` installs TensorFlow's CUDA build where nvidia-smi exists.")
        return 0
    devices.place()
    print(f"device: {devices.describe()}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        first, second = cell(uri, a.tiny), cell(uri, a.tiny)
        same = (first["test/accuracy"], first["test/loss"]) == (second["test/accuracy"], second["test/loss"])
        print(
            f"GPU cell, seed 0, twice with train.deterministic=true: test accuracy {first['test/accuracy']:.6f} and "
            f"{second['test/accuracy']:.6f}, loss {first['test/loss']:.6g} and {second['test/loss']:.6g}: "
            + ("the same" if same else "DIFFERENT")
        )
        failed |= not same
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}
    child = [sys.executable, __file__, "--cpu-cell", *(["--tiny"] if a.tiny else [])]
    out = subprocess.run(child, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"CPU cell failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
        return 1
    cpu = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"fit time of the same cell (same steps): GPU {second['time/fit_s']:.2f} s, CPU {cpu['time/fit_s']:.2f} s "
        f"(CPU / GPU = {cpu['time/fit_s'] / second['time/fit_s']:.2f})"
    )
    print("all checks passed" if not failed else "a check FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
