"""Shared fixtures: Hydra's compose API on the real conf/, a temporary MLflow SQLite store."""

import contextlib
import fcntl
import io
import logging
import logging.config
import os
import runpy
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

# Hydra, MLflow and TensorFlow are imported where they are used, not here: pytest-xdist's
# controller, which runs no test, imports this file before it starts the workers (3 s sooner).

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
    "tracking.cell_figures=false",
]
# Each cell's own PNGs cost about 0.5 s of CPU: tests that do not look at them (most) turn them off;
# the shared smoke sweep, the report tests and the browser test keep them (`figures=True`).
NO_CELL_FIGURES = "tracking.cell_figures=false"


def _figures(args, figures: bool) -> list[str]:
    own = any(str(a).startswith("tracking.cell_figures=") for a in args)
    return list(args) if figures or own else [*args, NO_CELL_FIGURES]


@pytest.fixture(scope="session", autouse=True)
def study_imported():
    """study.train registers the `repo_root` resolver the configs use. Imported by this fixture, in
    the test processes, not at the top of conftest: pytest-xdist's controller, which runs no test,
    then does not import TensorFlow (6 s before any worker starts). Then, as train() does before
    its first cell (`study.train.freeze_once`), what the imports created is kept out of every
    later garbage collection, also in tests that never train (reports, stores, sweeps' set-up)."""
    import study.train

    study.train.freeze_once()


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created and migrated once per test session: by the first
    pytest-xdist worker that needs it, in the session's own temporary folder (a migration costs
    2-3 s of CPU)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/, this session's
    path = shared / "empty-store.db"
    with open(shared / "empty-store.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait for it, then copy it
        if not path.exists():
            new = shared / f"empty-store-{os.getpid()}.db"
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=f"sqlite:///{new}").search_experiments(max_results=1)
            new.rename(path)
    return path


@pytest.fixture
def store(tmp_path, empty_store):
    """A fresh SQLite tracking URI, `sqlite:///<tmp_path>/mlflow.db` (a copy of the migrated empty
    store: no migration per test, 1-2 s of CPU each, in the test process or in the command it
    starts), and its client. Tests of a store that does not exist yet create their own."""
    from mlflow.tracking import MlflowClient

    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return uri, MlflowClient(tracking_uri=uri)


@pytest.fixture
def make_cfg(store):
    """compose(overrides) -> the resolved config of one cell, tracked in the temporary store."""

    from hydra import compose, initialize_config_dir

    def make(*overrides, tiny=True):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            keys = {o.split("=")[0] for o in overrides}
            base = [o for o in TINY if o.split("=")[0] not in keys] if tiny else []
            return compose("config", overrides=base + [f"tracking.uri={store[0]}", *overrides])

    return make


def run_cli(args, tmp_path, extra_env=None, timeout=600, figures=False):
    """`python -m study.train ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "study.train", *_figures(args, figures)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Ran:
    """What a command left: exit code, standard output and error (as subprocess.run's result)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _in_process(fn, argv: list[str], cwd: Path) -> Ran:
    """Run `fn()` as a command with this argv in cwd, in this process: exit code as the process
    would end with (SystemExit's code; a message means 1, printed to stderr, as Python does)."""
    out, err = io.StringIO(), io.StringIO()
    saved, handlers = sys.argv, logging.getLogger().handlers[:]
    sys.argv = argv
    code = 0
    try:  # Hydra configures logging with dictConfig, which would close pytest's own log handlers
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            mock.patch("logging.config._clearExistingHandlers", lambda: None),
        ):
            try:
                fn()
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = 1 if isinstance(e.code, str) else int(e.code or 0)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved
        logging.getLogger().handlers[:] = handlers  # Hydra's handlers wrote to the captured streams
    return Ran(code, out.getvalue(), err.getvalue())


def run_main(args, tmp_path, figures=False) -> Ran:
    """`python -m study.train ARGS` run by Hydra's own main in this process, in tmp_path: the same
    parsing, callbacks, launcher, exit code and output as the command, without a new process's
    imports (about 8 s of CPU each). Tests of processes (signals, kills, launchers, concurrency)
    use run_cli."""

    main = lambda: runpy.run_module("study.train", run_name="__main__", alter_sys=True)  # as `python -m`
    return _in_process(main, ["study/train.py", *_figures(args, figures)], Path(tmp_path))


def run_script(name: str, args, cwd) -> Ran:
    """`python scripts/NAME ARGS` in this process, in cwd: the script's own main, argument parsing,
    output and exit code, without a new process's imports (2-3 s of CPU for MLflow alone)."""
    script = str(ROOT / "scripts" / name)
    return _in_process(lambda: runpy.run_path(script, run_name="__main__"), [name, *map(str, args)], Path(cwd))


def run_report(args, cwd) -> Ran:
    """`python scripts/make_report.py ARGS --workers 1` in this process (figures drawn here, no fork);
    PNG figures only unless ARGS name `--formats` (the smoke report's test checks the PDFs)."""
    formats = [] if "--formats" in args else ["--formats", "png"]
    return run_script("make_report.py", [*args, "--workers", "1", *formats], cwd)


PG_BIN = (
    next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
    if Path("/usr/lib/postgresql").exists()
    else None
)


@contextlib.contextmanager
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 with database `mlflow` (user `mlflow`, trust
    authentication); yields its SQLAlchemy URI. Needs Debian's postgresql binaries (.ci/run)."""
    import tempfile

    pg_dir, pg_port = Path(tempfile.mkdtemp(prefix="study-pg-")), free_port()  # pytest's tmp is 0700
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
    try:
        subprocess.run(
            [f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow", "mlflow"], check=True
        )
        yield f"postgresql+psycopg2://mlflow:secret@127.0.0.1:{pg_port}/mlflow"
    finally:
        subprocess.run([*as_pg, f"{PG_BIN}/pg_ctl -D {pg_dir}/data -m immediate stop >/dev/null"], check=False)
        shutil.rmtree(pg_dir, ignore_errors=True)


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
def smoke_store(tmp_path_factory, empty_store):
    """One smoke multirun with full diagnostics, shared by the sweep and report tests."""
    tmp = tmp_path_factory.mktemp("smoke")
    shutil.copyfile(empty_store, tmp / "mlflow.db")
    proc = run_main(
        [
            "-m",
            "experiment=smoke",
            "diagnostics=full",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"hydra.sweep.dir={tmp}/sweep",
        ],
        tmp,
        figures=True,
    )
    return tmp, proc


def assert_no_healthy_at_chance(uri: str) -> int:
    """The verdicts' property on every sweep the tests run: no FINISHED cell at chance (final
    validation loss at least 0.99 ln K and accuracy within 0.02 of 1/K) is `healthy`, and none whose
    validation accuracy is far above chance (accuracy progress >= 0.25 over the majority class's
    share) is called a no-progress pathology. Returns the number of cells checked."""
    import math

    from mlflow.tracking import MlflowClient

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


def pytest_collection_modifyitems(config, items):
    """Slow tests first (in their written order): with several workers (make test runs 2), the
    longest tests start at once instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
