"""Soak: a 2-job sweep of 20 tiny cells through `make server` on PostgreSQL, the server stopped and
restarted twice mid-sweep. Afterwards (a rerun and a replay of the spilled metrics) every cell is
FINISHED exactly once, nothing is RUNNING, no metric is lost, and the password in the tracking URI
shows up in nothing printed or written."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers.commands import ROOT, run_main, run_report, run_script
from helpers.mlflow_queries import assert_no_healthy_at_chance, runs
from helpers.servers import PG_BIN, free_port, postgres
from mlflow.tracking import MlflowClient

from study import tracking

pytestmark = pytest.mark.slow
PASSWORD = "pw-4b9f1c"  # in the tracking URI: must show up nowhere
GRID = [
    "model.activation=sigmoid,tanh,relu,leaky_relu,elu",
    "optimizer=sgd,adam",
    "model.depth=1,2",
]  # 20 cells
TINY = [
    "data.options.n_train=320",
    "data.options.n_test=64",
    "data.options.image_size=12",
    "model.width=4",
    "train.epochs=2",
    "train.batch_size=64",
    "diagnostics=default",
]
OUTAGE_AT = (4, 12)  # the server goes down once this many cells have started
OUTAGE_S = 2.0  # down this long, then restarted (its own start adds a few seconds)


class Server:
    """`make server` over the PostgreSQL store, stopped (its whole process group) and restarted."""

    def __init__(self, backend: str, port: int, tmp):
        self.args = [
            "make",
            "-s",
            "server",
            f"URI={backend}",
            "HOST=127.0.0.1",
            f"PORT={port}",
            f"ARTIFACTS={tmp / 'artifacts'}",
            "SERVER_ARGS=--workers 1",
        ]
        self.url, self.log, self.proc = f"http://127.0.0.1:{port}", open(tmp / "server.log", "a"), None

    def start(self) -> float:
        t = time.time()
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, stdout=self.log, stderr=self.log, start_new_session=True, env=os.environ.copy()
        )
        for _ in range(240):
            assert self.proc.poll() is None, "make server exited"
            try:
                tracking.check_store(self.url, None, timeout=1)
                return time.time() - t
            except tracking.TrackingError:
                time.sleep(0.25)
        raise AssertionError("mlflow server did not start in 60 s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        """Stop the server if it still runs (a failing test must not leave it behind)."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


@pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL server binaries not installed (.ci/run installs them)")
def test_sweep_survives_two_server_restarts_with_every_cell_and_metric_recorded(tmp_path, request):
    t0 = time.time()
    with postgres() as backend:
        server = Server(backend, free_port(), tmp_path)
        request.addfinalizer(server.close)
        server.start()
        uri = f"http://bob:{PASSWORD}@{server.url.removeprefix('http://')}"
        args = [
            "-m",
            "experiment=smoke",
            *GRID,
            *TINY,
            "tracking=server",
            f"tracking.uri={uri}",
        ]
        # the first pass gives up fast (no HTTP retries, 5 s timeout): the outages must cost runs,
        # which the rerun and the replay then recover (MLflow's default retries ride out short ones)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "tests"),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        }
        t_first = time.time()
        first = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "study.train",
                *args,
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                f"hydra.sweep.dir={tmp_path}/sweep1",
                "tracking.cell_figures=false",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(first.stdout), daemon=True)
        reader.start()
        outages = []
        try:
            for n in OUTAGE_AT:
                deadline = time.time() + 240
                while sum("start:" in line for line in lines) < n and first.poll() is None:
                    assert time.time() < deadline, "the sweep stopped starting cells:\n" + "".join(lines[-30:])
                    time.sleep(0.1)
                down = time.time()
                server.stop()
                time.sleep(OUTAGE_S)
                server.start()
                outages.append(time.time() - down)
            first.wait(timeout=300)
            first_s = time.time() - t_first
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
            reader.join(timeout=10)
        first_out = "".join(lines)
        (tmp_path / "first_pass.log").write_text(first_out)  # for a reader of a failure
        client = MlflowClient(tracking_uri=uri)
        cells = lambda: [r for r in runs(client) if r.data.tags.get("role") == "cell"]  # noqa: E731
        first_finished = sum(r.info.status == "FINISHED" for r in cells())
        spills = sorted(tmp_path.glob("unsent_metrics_*.jsonl"))
        spilled = sum(len(f.read_text().splitlines()) for f in spills)

        # the sweep's workers are gone before the rerun (as when a user reruns later)
        for r in cells():
            pid = int(r.data.tags.get("pid", 0))
            for _ in range(120):
                if not pid or not _alive(pid):
                    break
                time.sleep(0.5)
        t_rerun = time.time()
        # MLflow's default retries; Hydra's basic launcher, in this process: which launcher reruns is
        # not the point (resuming is the same in every launcher), and two more joblib workers would
        # cost two more TensorFlow start-ups
        second = run_main([*args, f"hydra.sweep.dir={tmp_path}/sweep2"], tmp_path)
        rerun_s = time.time() - t_rerun
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

        printed = first_out + second.stdout + second.stderr
        if spills:  # `make replay`'s script, in this process (as the rerun)
            done = run_script("replay_unsent.py", ["--tracking-uri", uri, *spills], tmp_path)
            assert done.returncode == 0, done.stderr
            again = run_script("replay_unsent.py", ["--tracking-uri", uri, *spills], tmp_path)
            assert again.returncode == 0, again.stderr
            # every spilled metric is now in the store: a second replay finds nothing to log
            assert all(line.split(": ")[1].startswith("0 metrics logged") for line in again.stdout.splitlines())
            printed += done.stdout + done.stderr + again.stdout + again.stderr

        # every cell FINISHED exactly once, nothing RUNNING, every parent ended
        all_runs = runs(client)
        assert [r.info.run_name for r in all_runs if r.info.status == "RUNNING"] == []
        finished: dict[str, list] = {}
        for r in cells():
            if r.info.status == "FINISHED":
                finished.setdefault(r.data.tags["fingerprint"], []).append(r)
        assert len(finished) == 20 and all(len(v) == 1 for v in finished.values())
        assert assert_no_healthy_at_chance(uri) == 20
        # no metric lost in a FINISHED cell: every epoch and every logged diagnostic step is there
        for (r,) in finished.values():
            steps = int(r.data.params["train.steps_per_epoch"]) * int(r.data.params["train.epochs"])
            every = max(1, steps // 50)
            assert [m.step for m in client.get_metric_history(r.info.run_id, "val/accuracy")] == [0, 1]
            assert len(client.get_metric_history(r.info.run_id, "grad/logits/l2")) == -(-steps // every)
            assert {"test/accuracy", "diag/progress", "time/wall_s"} <= set(r.data.metrics)

        report = run_report(["--tracking-uri", uri, "--out", str(tmp_path / "report")], tmp_path)
        assert report.returncode == 0, report.stderr[-3000:]
        printed += report.stdout + report.stderr
        server.stop()

    # the password: in nothing printed, in no param or tag, in no file written (server.log aside)
    recorded = [
        (r.info.run_name, k) for r in all_runs for k, v in (r.data.params | r.data.tags).items() if PASSWORD in v
    ]
    assert recorded == []
    assert PASSWORD not in printed and "://***@127.0.0.1" in printed
    written = [f for f in tmp_path.rglob("*") if f.is_file() and f.name != "server.log"]
    assert len(written) > 50 and any(f.parent.name == ".hydra" for f in written)
    assert [str(f) for f in written if PASSWORD.encode() in f.read_bytes()] == []
    figures = {
        "soak_s": round(time.time() - t0, 1),
        "outages_s": [round(o, 1) for o in outages],
        "first_pass_s": round(first_s, 1),
        "rerun_s": round(rerun_s, 1),
        "first_pass_finished": first_finished,
        "first_pass_failed_or_lost": 20 - first_finished,
        "spill_files": len(spills),
        "metrics_spilled_and_replayed": spilled,
        "runs_in_store": len(all_runs),
    }
    print("soak:", json.dumps(figures))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
