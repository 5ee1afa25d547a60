"""Scaling out for real: joblib workers, submitit's local executor, a local Ray head, a server on PostgreSQL."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_healthy_at_chance, free_port, run_cli, runs
from mlflow.tracking import MlflowClient

from study import tracking

pytestmark = pytest.mark.slow
PASSWORD = "pw-4b9f1c"  # in the tracking URI of the server test
FOUR_CELLS = ["model.activation=sigmoid,relu", "optimizer=adam", "model.depth=2,4", "train.epochs=2"]
TWO_CELLS = ["model.activation=relu", "optimizer=adam", "model.depth=2,4", "train.epochs=1"]
PG_BIN = (
    next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
    if Path("/usr/lib/postgresql").exists()
    else None
)


def _cells(uri):
    assert_no_healthy_at_chance(uri)  # the verdicts' property, on every sweep run here
    all_runs = runs(MlflowClient(tracking_uri=uri))
    return [r for r in all_runs if r.data.tags.get("role") == "sweep"], [
        r for r in all_runs if r.data.tags.get("role") == "cell"
    ]


def test_smoke_sweep_with_two_joblib_jobs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(
        [
            "-m",
            "experiment=smoke",
            *TWO_CELLS,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,), children = _cells(uri)
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.tags["cells_finished"] == "2"


def test_submitit_local_launcher(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
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


@pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server binaries not installed (.ci/run installs them)")
def test_parallel_sweep_through_a_server_on_postgresql(tmp_path):
    pg_dir, pg_port, port = Path(tempfile.mkdtemp(prefix="study-pg-")), free_port(), free_port()  # pytest's tmp is 0700
    pg_dir.chmod(0o755)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(pg_dir, "postgres")
    as_pg = ["su", "postgres", "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
    subprocess.run([*as_pg, f"{PG_BIN}/initdb -D {pg_dir}/data -A trust -U mlflow >/dev/null"], check=True)
    subprocess.run(
        [
            *as_pg,
            f"{PG_BIN}/pg_ctl -D {pg_dir}/data -l {pg_dir}/log -w -o '-h 127.0.0.1 -p {pg_port} "
            f"-k {pg_dir}' start >/dev/null",
        ],
        check=True,
    )
    server = None
    try:
        subprocess.run(
            [f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow", "mlflow"], check=True
        )
        backend = f"postgresql+psycopg2://mlflow:secret@127.0.0.1:{pg_port}/mlflow"
        server = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "mlflow"),
                "server",
                "--workers",
                "1",
                "--backend-store-uri",
                backend,
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "server.log", "w"),
            start_new_session=True,
        )
        uri = f"http://bob:{PASSWORD}@127.0.0.1:{port}"  # the password must show up nowhere
        for _ in range(240):
            assert server.poll() is None, "mlflow server exited"
            try:
                tracking.check_store(uri, None, timeout=1)
                break
            except tracking.TrackingError:
                time.sleep(0.5)
        proc = run_cli(
            [
                "-m",
                "experiment=smoke",
                *FOUR_CELLS,
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                "tracking=server",
                f"tracking.uri={uri}",
                f"hydra.sweep.dir={tmp_path}/sweep",
            ],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (parent,), children = _cells(uri)
        assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
        c = MlflowClient(tracking_uri=uri)
        for r in children:
            steps = int(r.data.params["train.steps_per_epoch"]) * int(r.data.params["train.epochs"])
            every = max(1, steps // 50)
            assert len(c.get_metric_history(r.info.run_id, "grad/conv_01/l2")) == -(-steps // every)
            assert [m.step for m in c.get_metric_history(r.info.run_id, "val/accuracy")] == [0, 1]
            assert {a.path for a in c.list_artifacts(r.info.run_id)} >= {"config.yaml", "diagnostics.parquet"}
        report = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_report.py"), "--tracking-uri", uri, "--out", "report"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert report.returncode == 0, report.stderr[-3000:]
        # nowhere: not in what the sweep and the report printed, not in any param, tag or artifact,
        # not in any file they wrote (Hydra's .hydra/ files, multirun.yaml, job logs, the report)
        recorded = [
            (r.info.run_name, k, v) for r in [parent, *children] for k, v in (r.data.params | r.data.tags).items()
        ]
        assert [(name, k) for name, k, v in recorded if PASSWORD in str(v)] == []
        printed = proc.stdout + proc.stderr + report.stdout + report.stderr
        assert PASSWORD not in printed and "://***@127.0.0.1" in printed
        written = [f for f in tmp_path.rglob("*") if f.is_file() and f.name != "server.log"]
        assert len(written) > 50 and any(f.parent.name == ".hydra" for f in written)
        assert [str(f) for f in written if PASSWORD.encode() in f.read_bytes()] == []
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        subprocess.run([*as_pg, f"{PG_BIN}/pg_ctl -D {pg_dir}/data -m immediate stop >/dev/null"], check=False)
        shutil.rmtree(pg_dir, ignore_errors=True)


def test_ray_launcher_against_a_local_ray_head(tmp_path):
    """hydra/launcher=ray_cluster (hydra-ray-launcher) on a Ray head started here on 127.0.0.1."""
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
            "--num-cpus=2",
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
        uri = f"sqlite:///{tmp_path}/mlflow.db"
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
