"""Faults: kill and resume, unreachable or lost tracking server, unwritable artifact store."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers.commands import ROOT, run_main, run_report, run_script
from helpers.mlflow_queries import assert_no_healthy_at_chance, runs
from helpers.servers import free_port
from mlflow.tracking import MlflowClient

from study import tracking
from study.report import from_store

pytestmark = pytest.mark.slow


def test_killed_sweep_resumes_with_exactly_one_finished_run_per_cell(tmp_path, store):
    uri = store[0]
    args = [
        sys.executable,
        "-m",
        "study.train",
        "-m",
        "experiment=smoke",
        "model.depth=2",  # 4 cells
        "train.epochs=2",
        "tracking.cell_figures=false",
        f"tracking.uri={uri}",
    ]
    first = subprocess.Popen(
        [*args, f"hydra.sweep.dir={tmp_path}/sweep1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    for line in first.stdout:
        if line.startswith("[cell 3/4]") and "start:" in line:
            time.sleep(0.2)  # cell 3 has its RUNNING run (made before this line); a tiny cell trains ~1 s
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    client = MlflowClient(tracking_uri=uri)
    cells = lambda: [r for r in runs(client) if r.data.tags.get("role") == "cell"]  # noqa: E731
    assert sum(r.info.status == "FINISHED" for r in cells()) == 2
    assert sum(r.info.status == "RUNNING" for r in cells()) == 1

    second = run_main(["-m", "experiment=smoke", *args[5:], f"hydra.sweep.dir={tmp_path}/sweep2"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("skipped: already FINISHED") == 2
    finished = {}
    for r in cells():
        assert r.info.status in ("FINISHED", "KILLED")
        if r.info.status == "FINISHED":
            finished.setdefault(r.data.tags["fingerprint"], []).append(r)
    assert len(finished) == 4 and all(len(v) == 1 for v in finished.values())
    assert assert_no_healthy_at_chance(uri) == 4
    killed = [r for r in cells() if r.info.status == "KILLED"]
    assert len(killed) == 1 and killed[0].data.tags["outcome"] == "killed"
    # nothing stays RUNNING: the killed sweep's parent was closed by the rerun
    assert "closed 2 run(s) left RUNNING" in second.stdout
    parents = sorted((r for r in runs(client) if r.data.tags.get("role") == "sweep"), key=lambda r: r.info.start_time)
    assert [p.info.status for p in parents] == ["KILLED", "FINISHED"]
    assert not [r for r in runs(client) if r.info.status == "RUNNING"]
    # the resumed sweep's report sees all 4 cells, each once
    cells = from_store.load(uri, "activation-study").cells
    assert sorted(cells["outcome"]) == ["finished"] * 4 and cells["run_name"].is_unique


def test_rerun_true_trains_again(tmp_path, store):
    uri = store[0]
    base = [
        "-m",
        "experiment=smoke",
        "model.activation=relu",
        "optimizer=adam",
        "model.depth=2",
        "train.epochs=1",
        f"tracking.uri={uri}",
    ]
    assert run_main([*base, f"hydra.sweep.dir={tmp_path}/s1"], tmp_path).returncode == 0
    again = run_main([*base, "tracking.rerun=true", f"hydra.sweep.dir={tmp_path}/s2"], tmp_path)
    assert again.returncode == 0 and "skipped" not in again.stdout
    assert sum(r.data.tags.get("role") == "cell" for r in runs(MlflowClient(tracking_uri=uri))) == 2


@pytest.mark.parametrize("multirun", [False, True])
def test_unreachable_tracking_server_is_a_clear_error_before_training(tmp_path, multirun):
    t = time.time()
    proc = run_main(
        [*(["-m", "experiment=smoke"] if multirun else []), f"tracking.uri=http://bob:pw@127.0.0.1:{free_port()}"],
        tmp_path,
    )
    assert proc.returncode != 0 and time.time() - t < 60
    assert "is not reachable" in proc.stderr and "make server" in proc.stderr
    assert "pw" not in proc.stderr + proc.stdout and "start:" not in proc.stdout


def test_a_lost_server_is_waited_for_then_a_one_line_error(capsys):
    port = free_port()
    t = time.time()
    with pytest.raises(tracking.TrackingError) as err:
        tracking.wait_for_store(f"http://bob:pw@127.0.0.1:{port}", 2, "[cell 3/8] ")
    assert 2 <= time.time() - t < 30
    assert "still unreachable after 2 s (tracking.wait_s)" in str(err.value) and "pw" not in str(err.value)
    assert "[cell 3/8] tracking server http://***@127.0.0.1" in capsys.readouterr().out
    tracking.wait_for_store("sqlite:////nonexistent/dir/mlflow.db", 0)  # a local store: nothing to wait for


def test_unwritable_artifact_store_is_a_clear_error(tmp_path):
    proc = run_main(
        [
            "data=synthetic",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            "tracking.experiment=unwritable",
            "tracking.artifact_location=/etc/hostname/artifacts",
        ],
        tmp_path,
    )
    assert proc.returncode != 0 and "is not writable" in proc.stderr and "start:" not in proc.stdout


def _server(db, port):
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "mlflow"),
            "server",
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as `make server` runs it
    )
    for _ in range(240):
        try:
            tracking.check_store(f"http://127.0.0.1:{port}", None, timeout=1)
            return server
        except tracking.TrackingError:
            time.sleep(0.5)
    raise AssertionError("mlflow server did not start")


def test_server_lost_mid_run_keeps_every_metric_and_replay_restores_them(tmp_path, monkeypatch, store):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _server(tmp_path / "mlflow.db", port)  # the `store` fixture's migrated empty store
    try:  # set-up with MLflow's own retries and timeouts, however loaded the machine is
        c = tracking.client(uri)
        exp = tracking.ensure_experiment(c, "lost", None)
        run = tracking.RunLogger(c, c.create_run(exp).info.run_id, spill_dir=tmp_path)
        run.RETRIES = 2
        run.metrics({"train/loss": 1.0}, step=0)
        run.flush()
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # only now: the server is gone
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    run.metrics({"train/loss": 0.5, "val/loss": 0.7}, step=1)
    with pytest.raises(tracking.TrackingError) as err:
        run.flush()
    spill = tmp_path / f"unsent_metrics_{run.run_id}.jsonl"
    assert str(spill) in str(err.value) and len(spill.read_text().splitlines()) == 2
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT")

    server = _server(tmp_path / "mlflow.db", port)  # the store is back: replay, twice
    try:
        replay = ["--tracking-uri", uri, spill]
        first = run_script("replay_unsent.py", replay, tmp_path)
        assert first.returncode == 0 and "2 metrics logged, 0 already in the store" in first.stdout, first.stderr
        again = run_script("replay_unsent.py", replay, tmp_path)
        assert again.returncode == 0 and "0 metrics logged, 2 already in the store" in again.stdout, again.stderr
        c = tracking.client(uri)
        assert [(m.step, m.value) for m in c.get_metric_history(run.run_id, "train/loss")] == [(0, 1.0), (1, 0.5)]
        assert [(m.step, m.value) for m in c.get_metric_history(run.run_id, "val/loss")] == [(1, 0.7)]
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_ctrl_c_in_a_single_run_ends_it_killed_in_one_line(tmp_path, store):
    uri = store[0]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "study.train",
            "data=synthetic",
            "train.epochs=500",
            "train.verbose=0",
            f"tracking.uri={uri}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell starts background jobs with SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: give the child the default handling, as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stdout:
        if "start:" in line:
            time.sleep(3.0)  # training now
            break
    for _ in range(24):  # as a user would: Ctrl-C again if one press lands where TensorFlow swallows it
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err and "ended KILLED" in out
    (run,) = runs(MlflowClient(tracking_uri=uri))
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "killed" and "error" not in run.data.tags


def test_ctrl_c_that_surfaces_as_another_error_still_ends_the_run_killed(tmp_path, store):
    uri = store[0]
    # Ctrl-C as in a command started from a terminal: pytest started as a background job (`make
    # test &`) inherits SIGINT ignored, and the simulated Ctrl-C would then do nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = run_main(
            [
                "data=synthetic",
                "train.verbose=0",
                "+train.callbacks=[{_target_: helpers.callbacks.CtrlCSurfacingAsAnotherError}]",
                f"tracking.uri={uri}",
            ],
            tmp_path,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "interrupted (Ctrl-C)" in proc.stderr and "ended KILLED" in proc.stdout
    (run,) = runs(MlflowClient(tracking_uri=uri))
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "killed" and "error" not in run.data.tags


@pytest.mark.parametrize(
    "sig, sweep",
    [("SIGTERM", False), ("SIGHUP", False), ("SIGTERM", True)],
    ids=["sigterm-single", "sighup-single", "sigterm-sweep"],
)
def test_sigterm_and_sighup_end_the_run_and_its_sweep_killed_in_one_line(tmp_path, store, sig, sweep):
    """What `timeout`, SLURM, `docker stop` (SIGTERM) and a closed terminal (SIGHUP) send, while a
    cell trains in this process (a single run, or the basic launcher's cell)."""
    uri = store[0]
    args = [
        "data=synthetic",
        "train.verbose=0",
        f"+train.callbacks=[{{_target_: helpers.callbacks.SendSignal, signal: {sig}}}]",
        f"tracking.uri={uri}",
    ]
    if sweep:
        args = ["-m", "experiment=smoke", "model.depth=2", f"hydra.sweep.dir={tmp_path}/sweep", *args]
    # a suite started under `nohup` inherits SIGHUP ignored, which the harness rightly leaves ignored:
    # the test is of a process with the default disposition
    inherited = signal.signal(getattr(signal, sig), signal.SIG_DFL)
    try:
        proc = run_main(args, tmp_path)
        restored = signal.getsignal(getattr(signal, sig))
    finally:
        signal.signal(getattr(signal, sig), inherited)
    code = 128 + getattr(signal, sig)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and f"interrupted ({sig}): stopped" in proc.stderr
    assert proc.stdout.count("ended KILLED") == 1
    done = runs(MlflowClient(tracking_uri=uri))
    assert len(done) == (2 if sweep else 1)  # the first cell, and the sweep's parent run
    assert all(r.info.status == "KILLED" and r.data.tags["outcome"] == "killed" for r in done)
    assert restored is signal.SIG_DFL  # handlers restored


def test_sigterm_to_a_joblib_sweep_ends_its_running_cells_and_parent_killed(tmp_path, store):
    """SIGTERM to the sweep's process alone (`timeout`, `kill <pid>`) while two joblib workers train:
    the workers are terminated by joblib without a word, the sweep's process closes their runs."""
    uri = store[0]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "study.train",
            "-m",
            "experiment=smoke",
            "train.epochs=500",
            "train.verbose=0",
            "tracking.cell_figures=false",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = 0
    for line in proc.stdout:
        started += "start:" in line
        if started == 2:  # both workers train
            time.sleep(2.0)
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted (SIGTERM): sweep " in err and "3 run(s) ended KILLED" in err, err[-2000:]
    done = runs(MlflowClient(tracking_uri=uri))
    assert len(done) == 3 and all(r.info.status == "KILLED" and r.data.tags["outcome"] == "killed" for r in done)


def test_a_store_that_is_not_a_database_is_a_one_line_error_and_left_intact(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("my notes, not a database\n")
    proc = run_main(["data=synthetic", f"tracking.uri=sqlite:///{bad}"], tmp_path)
    assert proc.returncode == 2 and f"tracking store {bad} is not a SQLite database" in proc.stderr
    assert "Traceback" not in proc.stderr and bad.read_text() == "my notes, not a database\n"


def test_a_store_in_a_folder_that_cannot_be_written_is_a_clear_error(tmp_path):
    folder = tmp_path / "frozen"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root on a file system that supports it)")
    try:
        t = time.time()
        proc = run_main(["data=synthetic", f"tracking.uri=sqlite:///{folder}/mlflow.db"], tmp_path)
        assert proc.returncode == 2 and time.time() - t < 60
        assert f"folder {folder} is not writable" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert list(folder.iterdir()) == []


@pytest.mark.xdist_group("smoke")
def test_report_on_a_mistyped_store_creates_nothing_and_lists_sweeps(tmp_path, smoke_store):
    missing = tmp_path / "typo" / "mlflow.db"
    proc = run_report(["--tracking-uri", f"sqlite:///{missing}"], tmp_path)
    assert proc.returncode != 0 and f"no tracking store at {missing}" in proc.stderr
    assert not (tmp_path / "typo").exists()
    store, _ = smoke_store
    proc = run_report(["--tracking-uri", f"sqlite:///{store}/mlflow.db", "--sweep", "nope", "--no-log"], tmp_path)
    assert proc.returncode != 0 and "no sweep 'nope'" in proc.stderr and "(smoke)" in proc.stderr
    assert "make sweep" not in proc.stderr


def test_sweeps_started_at_once_on_a_new_store_all_finish(tmp_path):
    uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "study.train",
                "-m",
                "experiment=smoke",
                "model.activation=relu",
                "optimizer=adam",
                "model.depth=2",
                "train.epochs=1",
                f"seed={i}",
                f"tracking.uri={uri}",
                f"hydra.sweep.dir={tmp_path}/s{i}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    all_runs = runs(MlflowClient(tracking_uri=uri))
    assert sorted(r.info.status for r in all_runs) == ["FINISHED"] * 4  # 2 parents, 2 cells
    assert sum("new tracking store created" in e for _, e in outs) == 1


@pytest.mark.parametrize("revision, said", [("0a8213491aaa", "has an older MLflow schema"), ("fffffffffff0", "newer")])
def test_a_store_of_another_mlflow_schema_is_a_one_line_error_and_left_untouched(tmp_path, store, revision, said):
    import sqlite3

    db = tmp_path / "other.db"  # a copy of a migrated store (one this process never opened), set to another revision
    shutil.copyfile(tmp_path / "mlflow.db", db)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    before = db.read_bytes()
    train = run_main(["data=synthetic", f"tracking.uri=sqlite:///{db}"], tmp_path)
    assert train.returncode == 2 and "start:" not in train.stdout, train.stderr[-2000:]
    report = run_report(["--tracking-uri", f"sqlite:///{db}"], tmp_path)
    assert report.returncode != 0 and not (tmp_path / "reports").exists()
    for proc in (train, report):
        assert f"error: tracking store {db}" in proc.stderr and said in proc.stderr and revision in proc.stderr
        assert "Traceback" not in proc.stderr
    assert db.read_bytes() == before
