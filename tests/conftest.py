"""Fixtures only: Hydra's compose API on the real conf/, temporary MLflow SQLite stores, the shared smoke
sweep. Helpers live in tests/helpers/."""

import fcntl
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
from helpers.commands import ROOT, TINY, run_main  # noqa: E402

# Hydra, MLflow and TensorFlow are imported where they are used, not here: pytest-xdist's
# controller, which runs no test, imports this file before it starts the workers (3 s sooner).


@pytest.fixture(scope="session", autouse=True)
def study_imported():
    """study.train registers the `repo_root` resolver the configs use. Imported by this fixture, in
    the test processes, not at the top of conftest: pytest-xdist's controller, which runs no test,
    then does not import TensorFlow (6 s before any worker starts). Then, as train() does before
    its first cell (`study.runtime.freeze_once`), what the imports created is kept out of every
    later garbage collection, also in tests that never train (reports, stores, sweeps' set-up)."""
    import study.runtime
    import study.train  # noqa: F401 (registers the resolver)

    study.runtime.freeze_once()


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


def pytest_collection_modifyitems(config, items):
    """Slow tests first (in their written order): with several workers (make test runs 2), the
    longest tests start at once instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
