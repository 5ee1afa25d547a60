"""Scaling out for real: submitit's local executor and a local Ray head (joblib workers through a
server on PostgreSQL: tests/test_soak.py)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers.commands import run_cli
from helpers.mlflow_queries import assert_no_healthy_at_chance, runs
from helpers.servers import free_port
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _cells(uri):
    assert_no_healthy_at_chance(uri)  # the verdicts' property, on every sweep run here
    all_runs = runs(MlflowClient(tracking_uri=uri))
    return [r for r in all_runs if r.data.tags.get("role") == "sweep"], [
        r for r in all_runs if r.data.tags.get("role") == "cell"
    ]


def test_submitit_local_launcher(tmp_path, store):
    uri = store[0]
    proc = run_cli(
        [
            "-m",
            "experiment=smoke",
            "hydra/launcher=local",
            "model.activation=relu",
            "optimizer=adam",
            "model.depth=2,4",
            "train.epochs=1",
            "train.threads=1",
            f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,), children = _cells(uri)
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}


def test_ray_launcher_against_a_local_ray_head(tmp_path, store):
    """hydra/launcher=ray_cluster (hydra-ray-launcher) on a Ray head started here on 127.0.0.1, with
    one CPU, as a cluster with more cells than CPUs: the cells run one after another (in the run
    checked, both in the same worker), 48 s of the machine's CPU for the test instead of 61 s."""
    ray_cli = Path(os.path.dirname(os.sys.executable)) / "ray"
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run(
        [
            str(ray_cli),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=1",  # the cells one after another in one worker: one TensorFlow start-up, not two
            "--include-dashboard=false",
            f"--temp-dir={temp}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        uri = store[0]
        proc = run_cli(
            [
                "-m",
                "experiment=smoke",
                "hydra/launcher=ray_cluster",
                f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                "model.activation=relu",
                "optimizer=adam",
                "model.depth=2,4",
                "train.epochs=1",
                f"tracking.uri={uri}",
                f"hydra.sweep.dir={tmp_path}/sweep",
            ],
            tmp_path,
            extra_env=env,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (parent,), children = _cells(uri)
        assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
        assert parent.data.tags["cells_finished"] == "2"
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(temp, ignore_errors=True)
