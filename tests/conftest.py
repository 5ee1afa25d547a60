"""Shared fixtures: Hydra's compose API on the real conf/, a temporary MLflow SQLite store."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

import study.train  # noqa: E402,F401  (registers the repo_root resolver)

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "data=synthetic",
    "data.options.n_train=256",
    "data.options.n_test=64",
    "data.options.image_size=12",
    "model.width=4",
    "model.depth=2",
    "train.epochs=1",
    "train.batch_size=32",
    "train.verbose=0",
]


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created and migrated once per test session."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture
def store(tmp_path, empty_store):
    """A fresh SQLite tracking URI (a copy of the migrated empty store: no migration per test) and
    its client."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return uri, MlflowClient(tracking_uri=uri)


@pytest.fixture
def make_cfg(store):
    """compose(overrides) -> the resolved config of one cell, tracked in the temporary store."""

    def make(*overrides, tiny=True):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=(TINY if tiny else []) + [f"tracking.uri={store[0]}", *overrides])

    return make


def run_cli(args, tmp_path, extra_env=None, timeout=600):
    """`python -m study.train ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "study.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runs(client, experiment="activation-study"):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=10000)


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    """One smoke multirun with full diagnostics, shared by the sweep and report tests."""
    tmp = tmp_path_factory.mktemp("smoke")
    proc = run_cli(
        [
            "-m",
            "experiment=smoke",
            "diagnostics=full",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"hydra.sweep.dir={tmp}/sweep",
        ],
        tmp,
    )
    return tmp, proc


def assert_no_healthy_at_chance(uri: str) -> int:
    """The verdicts' property on every sweep the tests run: no FINISHED cell at chance (final
    validation loss at least 0.99 ln K and accuracy within 0.02 of 1/K) is `healthy`, and none whose
    validation accuracy is far above chance (accuracy progress >= 0.25 over the majority class's
    share) is called a no-progress pathology. Returns the number of cells checked."""
    import math

    client = MlflowClient(tracking_uri=uri)
    checked = 0
    for r in runs(client):
        if r.data.tags.get("role") != "cell" or r.info.status != "FINISHED":
            continue
        k = int(r.data.params.get("data.num_classes", 10))
        loss = r.data.metrics.get("val/loss", float("nan"))
        acc = r.data.metrics.get("val/accuracy", float("nan"))
        said = (r.info.run_name, r.data.tags.get("verdict_reason"))
        if math.isfinite(loss) and loss >= 0.99 * math.log(k) and abs(acc - 1 / k) <= 0.02:
            assert r.data.tags["gradient_verdict"] != "healthy", said
        chance = r.data.metrics.get("diag/chance_accuracy", 1 / k)  # the majority class's share
        if r.data.tags.get("outcome") == "finished" and (acc - chance) / (1 - chance) >= 0.25:
            assert r.data.tags["gradient_verdict"] in ("healthy", "exploding"), said
        checked += 1
    return checked
