"""MLflow tracking: stores, experiments, runs, params, batched metrics, artifacts, fingerprints.

Everything goes through an explicit `MlflowClient(uri)` (no global fluent state), so several stores
can be used in one process and tests point runs at a temporary SQLite file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study import contract, verdicts

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
MAX_PARAMS_PER_BATCH = 100
# Keys left out of the config fingerprint: where results go and how they are launched, not what runs.
NON_SEMANTIC = (
    "tracking",
    "hydra",
    "train.verbose",
    "train.callbacks",
    "train.threads",
    "train.steps_per_execution",  # the same steps, several per call into TensorFlow
    "diagnostics.verdict",
    "question",  # the preset's question, a description
)
# key -> the value that trains exactly as before the key existed (Keras's own default)
ADDED_KEYS = {
    "model.bn_momentum": 0.99,
    "arm": "none",
    "model.init_scale": 1.0,
    "model.max_pools": 2,
    "train.loss": "cross_entropy",
    "data.standardize": False,
    "diagnostics.curvature.every_n_steps": 0,
    "diagnostics.curvature.examples": 1024,
    "diagnostics.curvature.iterations": 20,
    "diagnostics.curvature.top_k": 1,
    "diagnostics.curvature.trace_samples": 0,
}


class _FullDiskFilter(logging.Filter):
    """MLflow logs a whole traceback for every SQLite error before it raises it; a full disk under
    the store is said here in one line naming the store (`_no_space`), so MLflow's is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database or disk is full" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_FullDiskFilter())


def default_uri() -> str:
    return f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def redact(text: str) -> str:
    """Hide `user:password@` credentials inside URIs."""
    return re.sub(r"(://)[^/@\s:]+(:[^/@\s]*)?@", r"\1***@", str(text))


class RedactFilter(logging.Filter):
    """A logging filter hiding URI credentials in every record (Hydra's launch lines name the
    overrides, `tracking.uri` included); conf/config.yaml puts it on Hydra's and the jobs' handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        return True


def redact_files(paths) -> None:
    """Rewrite files (Hydra's `.hydra/*.yaml`, `multirun.yaml`) with URI credentials hidden."""
    for path in paths:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if redact(text) != text:
            Path(path).write_text(redact(text))


def shown_uri(uri: str) -> str:
    """The store as a report may print it: credentials hidden, a SQLite path relative to the
    repository (`sqlite:///<repo>/mlflow.db`) or only its file name, never this machine's path."""
    path = sqlite_path(uri)
    if path is None:
        return redact(uri)
    try:
        return f"sqlite:///<repo>/{path.resolve().relative_to(REPO_ROOT)}"
    except ValueError:
        return f"sqlite:///<elsewhere>/{path.name}"


def artifact_location(uri: str, explicit: str | None = None) -> str | None:
    """Where a new experiment keeps artifacts: explicit, next to a SQLite file, or the server's."""
    if explicit:
        return Path(explicit).resolve().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


_CLIENTS: dict[str, MlflowClient] = {}


def client(uri: str) -> MlflowClient:
    """The process's client of the store (one per URI, shared by every cell this process trains); a
    SQLite store that does not exist yet is created, and that is said."""
    if uri not in _CLIENTS:
        _CLIENTS[uri] = _new_client(uri, sqlite_path(uri))
    return _CLIENTS[uri]


def _new_client(uri: str, path: Path | None) -> MlflowClient:
    if path is None:
        if redact(uri) != uri:  # MLflow prints "View run ... at <uri>", credentials included
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        return MlflowClient(tracking_uri=uri)
    made = [p for p in reversed(path.parents) if not p.exists()]  # the folders made for a new store, outermost first
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_new = not lock.exists()
        lock_file = open(lock, "w")  # held (and locked) while the store is made
    except OSError as err:
        _remove_new(None, None, made)
        raise TrackingError(
            f"tracking store {path} cannot be created: {err.filename or path.parent}: {err.strerror}; "
            "set tracking.uri to a store in a writable folder"
        ) from None
    # MLflow creates and migrates a SQLite schema on first use, and two processes doing that at once
    # fail ("table ... already exists", alembic_version): the first use happens under a file lock.
    with lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        existed = path.exists()
        new = not existed or path.stat().st_size == 0
        try:
            c = MlflowClient(tracking_uri=uri)
            c.search_experiments(max_results=1)
        except BaseException as err:
            if new:  # a half-made store reads as a corrupt one later ("duplicate column name"): undone
                _undo_new_store(uri, path, existed)
                _remove_new(lock if lock_new else None, None, made)
            schema = _schema_error(path, err) if isinstance(err, Exception) else None
            if schema is not None:
                raise schema from None
            if _disk_full(err):
                raise TrackingError(
                    f"{_no_space(uri)} while creating it (nothing left behind)"
                    if new
                    else f"{_no_space(uri)} while opening it (the store is unchanged)"
                ) from None
            raise

    if new:
        also = f" (folder {made[0]} made for it)" if made else ""
        print(f"new tracking store created at {path}{also}", file=sys.stderr, flush=True)
    return c


def _undo_new_store(uri: str, path: Path, existed: bool) -> None:
    """The SQLite file this process began to make and could not finish: removed with its journal (a
    zero-byte file that was there before is left zero bytes), and MLflow's cached engine of it
    disposed (its pooled connection would keep the removed file open and be used again)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engines = getattr(SqlAlchemyStore, "_engine_map", {})
    for key in [k for k in engines if k == uri or sqlite_path(k) == path]:
        with contextlib.suppress(Exception):
            engines.pop(key).dispose()
    for extra in ("-journal", "-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        if existed:
            os.truncate(path, 0)
        else:
            path.unlink(missing_ok=True)


def _remove_new(lock: Path | None, file: Path | None, folders: list[Path]) -> None:
    """Remove files and (empty) folders this process made, the innermost folder first."""
    for p in (lock, file):
        if p is not None:
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _schema_error(path: Path, err: Exception) -> TrackingError | None:
    """A store whose MLflow schema is not this MLflow's, as one line that says what to do; None
    for any other error. MLflow names both revisions; an older one is among its migrations."""
    import mlflow
    from mlflow.store import db_migrations

    found = re.search(r"found version (\w+), but expected (\w+)", str(err))
    if found is None:
        return None
    rev, head = found.groups()
    known = any(f.name.startswith(rev) for f in (Path(db_migrations.__file__).parent / "versions").glob("*.py"))
    if known:
        return TrackingError(
            f"tracking store {path} has an older MLflow schema ({rev}) than MLflow {mlflow.__version__} "
            f"({head}): back it up, then run `mlflow db upgrade sqlite:///{path}` (store left untouched)"
        )
    return TrackingError(
        f"tracking store {path} was written by a newer MLflow (schema {rev}, unknown to MLflow "
        f"{mlflow.__version__}): open it with that MLflow version (store left untouched)"
    )


class TrackingError(RuntimeError):
    """The tracking store cannot be used; raised before any training."""


SQLITE_HEADER = b"SQLite format 3\x00"
PROBE_BYTES = 4096  # written (and removed) to see that a folder takes a file and has room for it
NEW_STORE_BYTES = 2 * 2**20  # a new, migrated MLflow SQLite store takes about 1 MB


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI (SQLAlchemy's `?key=value` options left out)."""
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]) if uri.startswith("sqlite:///") else None


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _free(path: Path) -> str:
    """Free space on the file system of `path` (or of its nearest existing folder), for messages."""
    try:
        near = next(p for p in (path, *path.parents) if p.exists())
        return f"{_size(shutil.disk_usage(near).free)} free"
    except OSError:
        return "free space unknown"


def _disk_full(err: BaseException | None) -> bool:
    """The error, or one it was raised from, is a full disk (ENOSPC, or SQLite's SQLITE_FULL)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "database or disk is full" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _no_space(uri: str) -> str:
    path = sqlite_path(uri)
    if path is None:
        return f"no space left on device for tracking store {redact(uri)} (the server's disk)"
    return f"no space left on device for tracking store {path} ({_free(path.parent)})"


@contextlib.contextmanager
def _store_write(uri: str, during: str):
    """MLflow's error for a full disk under the store (a traceback naming no file) as one line."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as err:
        if _disk_full(err):
            raise TrackingError(
                f"{_no_space(uri)} {during}; free some space, or set tracking.uri to a store on another disk"
            ) from None
        raise


def _writable_folder(folder: Path, what: str, fix: str, need: int = 0) -> None:
    """`folder`, which need not exist yet, can take new files: the nearest existing path on the way
    to it is a folder, takes a file (PROBE_BYTES written and removed) and has `need` bytes free.
    Each failure is one TrackingError naming the path; nothing is created."""
    try:
        near = next(p for p in (folder, *folder.parents) if p.exists())
    except OSError as err:  # a folder on the way that cannot be searched
        raise TrackingError(f"{what} cannot be reached: {err.filename}: {err.strerror}; {fix}") from None
    if not near.is_dir():
        raise TrackingError(f"{what} is not writable: {near} is a file, not a folder; {fix}")
    try:
        with tempfile.NamedTemporaryFile(dir=near, prefix=".write-check-", buffering=0) as f:
            f.write(b"\0" * PROBE_BYTES)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise TrackingError(f"{what}: no space left on device for {near} ({_free(near)}); {fix}") from None
        said = what if near == folder and what.endswith(str(folder)) else f"{what}: folder {near}"
        raise TrackingError(f"{said} is not writable ({err.strerror}); {fix}") from None
    if need and shutil.disk_usage(near).free < need:
        raise TrackingError(
            f"{what}: no space left on device for {near} ({_free(near)}; a new MLflow store needs {_size(need)}); {fix}"
        )


def check_sqlite(uri: str, must_exist: bool = False) -> None:
    """A SQLite store must be given by an absolute path, and be a SQLite file this process can read
    and write (or, when it may be created, absent) in a folder this process can write, with room
    (SQLite writes a journal beside it; a new store needs about 1 MB). Checked before MLflow touches
    it: MLflow retries for minutes and then fails with tracebacks that do not name the file. The
    folders of a new store that do not exist yet are made when it is created (and said so)."""
    path = sqlite_path(uri)
    if path is None or str(path) in (".", ":memory:"):
        return
    if not path.is_absolute():
        here = Path.cwd() / path
        raise TrackingError(
            f"tracking store {uri} is a relative path: it names another file from every working folder "
            f"(a sweep's jobs, the report, the UI); give an absolute one, e.g. sqlite:///{here}"
        )
    fix = "set tracking.uri to a store in a writable folder"
    try:
        exists = path.exists()
    except OSError as err:
        raise TrackingError(f"tracking store {path} cannot be reached: {err.filename}: {err.strerror}") from None
    if exists:
        if path.is_dir():
            raise TrackingError(f"tracking store {path} is a folder, not a SQLite file")
        if not path.is_file():
            raise TrackingError(f"tracking store {path} is not a regular file (a device or pipe), not a SQLite file")
        try:
            with path.open("rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as err:
            raise TrackingError(
                f"tracking store {path} cannot be read ({err.strerror}); make it readable, or {fix}"
            ) from None
        if head and head != SQLITE_HEADER:
            raise TrackingError(
                f"tracking store {path} is not a SQLite database (left untouched); "
                "point tracking.uri at an MLflow SQLite file or a new path"
            )
        try:  # opened for writing, nothing written: a read-only or immutable file fails here, not in MLflow
            os.close(os.open(path, os.O_RDWR))
        except OSError as err:
            raise TrackingError(
                f"tracking store {path} is not writable ({err.strerror}; runs, and the report's own "
                f"artifacts, are written into it); make it writable, or {fix}"
            ) from None
    elif must_exist:
        raise TrackingError(
            f"no tracking store at {path} (nothing created); runs are recorded by "
            "`make sweep`, or pass --tracking-uri of an existing store"
        )
    _writable_folder(path.parent, f"tracking store {path}", fix, need=0 if exists else NEW_STORE_BYTES)


def check_artifacts(location: str | None, fix: str = "set tracking.artifact_location to a writable folder") -> None:
    """A local (`file:`) artifact location must be a folder, or a path where one can be made, that
    this process can write, with room. Other locations (a server's) are the server's to check."""
    if not location or not location.startswith("file:"):
        return
    from urllib.parse import unquote, urlparse

    folder = Path(unquote(urlparse(location).path))
    _writable_folder(folder, f"artifact folder {folder}", fix)


def check_store(uri: str, artifacts: str | None, timeout: float = 5.0) -> None:
    """Fail fast and clearly: an unreachable tracking server, a SQLite store that is not a database
    or cannot be written, or an artifact folder that cannot be written (see check_sqlite,
    check_artifacts)."""
    check_sqlite(uri)
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
        except requests.RequestException as err:
            raise TrackingError(
                f"tracking server {redact(uri)} is not reachable ({type(err).__name__}); "
                "start it with `make server`, or set tracking.uri to another store"
            ) from None
    check_artifacts(artifacts)


def wait_for_store(uri: str, timeout_s: float, who: str = "") -> None:
    """A tracking server that went away (restarted, network): wait for it up to `timeout_s`
    (`tracking.wait_s`) instead of failing, so that the cells of a sweep wait out an outage rather
    than fail one after another. Local stores return at once. TrackingError after the wait."""
    if not uri.startswith(("http://", "https://")):
        return
    t0, said = time.time(), False
    while True:
        try:
            check_store(uri, None, timeout=2)
        except TrackingError:
            if time.time() - t0 >= timeout_s:
                raise TrackingError(
                    f"tracking server {redact(uri)} still unreachable after {timeout_s:g} s (tracking.wait_s); "
                    "start it with `make server`, then rerun the sweep: finished cells are skipped"
                ) from None
            if not said:
                print(f"{who}tracking server {redact(uri)} unreachable: waiting up to {timeout_s:g} s", flush=True)
                said = True
            time.sleep(1.0)
            continue
        if said:
            print(f"{who}tracking server back after {time.time() - t0:.0f} s", flush=True)
        return


NOTE = "mlflow.note.content"  # MLflow's description of an experiment or run (shown in its UI)
EXPERIMENT_NOTE = """**Activation × optimizer × depth: when do CNN gradients vanish or explode?**

Each parent run (tag `role=sweep`, named `<preset>-<sweep id>`) is one sweep; its child runs (tag
`role=cell`, named `<activation>-<optimizer>-d<depth>-s<seed>`) are the grid's cells. Open a run for
its accuracy (`test/accuracy`), its gradient verdict and the numbers behind it (tags
`gradient_verdict`, `verdict_reason`), per-layer gradient statistics (`grad/<layer>/rms`) and the
verdict's evidence (`diag/*`); its own figures are artifacts `figures/curves.png`, `gradients.png`
and `signal.png`. A sweep's report (after `make report`) is its parent run's artifact
`report/report.html` (the whole report, figures included), beside `report/REPORT.md`.

In the runs table: expand a sweep (the ⊞ beside its name) to list its cells; "Columns" adds params and
metrics; in the chart view, choose "Show all runs" (charts show the first 10 by default).

Verdicts (first match wins; progress P = the larger of 1 - final val loss / ln K and
(val accuracy - c) / (1 - c), c the majority class's share of the validation set): `diverged`
(loss non-finite), `exploding` (non-finite or fast-growing gradients, or loss above
{t.blowup_above:g} ln K), `healthy` (P >= {t.progress_healthy:g}), `slow`
({t.progress_min:g} <= P < {t.progress_healthy:g}), and for nets that did not learn: `exploding`
(first/last weight-gradient ratio > {t.exploding_above:g}), `vanishing` (ratio <
{t.vanishing_below:g}), `collapsed` (forward signal last/first layer < {t.collapse_below:g}),
`dead` (>= {t.dead_above:g} of the channels of a layer dead), `stalled` (none of these).

Filters: ``metrics.`test/accuracy` > 0.5``, `params.model.depth = '16'`, `tags.gradient_verdict = 'collapsed'`.
""".format(t=verdicts.Thresholds())  # the numbers are the verdict defaults, not a copy


def ensure_experiment(c: MlflowClient, name: str, artifacts: str | None) -> str:
    """The experiment's id (created if needed, with its description). An experiment's artifact
    folder is fixed when it is created: a new one is checked before (a bad location is never
    recorded), an existing one is checked with advice that fits, and a different `artifacts` asked
    for is said to be ignored."""
    with _store_write(c.tracking_uri, f"while recording experiment {name!r}"):
        exp = c.get_experiment_by_name(name)
        if exp is None:
            check_artifacts(artifacts)
            try:
                exp_id = c.create_experiment(name, artifact_location=artifacts)
            except Exception:  # created meanwhile by another process
                exp = c.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        if exp is not None:
            check_artifacts(
                exp.artifact_location,
                f"experiment {name!r} keeps the artifact folder it was created with: make that folder "
                "writable, or set tracking.experiment to a new experiment",
            )
            if artifacts and exp.artifact_location != artifacts:
                print(
                    f"experiment {name!r} keeps its artifacts in {exp.artifact_location} (fixed when it was "
                    f"created), not {artifacts}: tracking.artifact_location applies to new experiments",
                    file=sys.stderr,
                    flush=True,
                )
        if exp is None or exp.tags.get(NOTE) != EXPERIMENT_NOTE:
            c.set_experiment_tag(exp_id, NOTE, EXPERIMENT_NOTE)
    return exp_id


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

    gpus = tf.config.list_physical_devices("GPU")
    return {
        contract.GIT_COMMIT: git_commit(),
        contract.TF_VERSION: tf.__version__,
        contract.KERAS_VERSION: keras.__version__,
        contract.PYTHON_VERSION: platform.python_version(),
        contract.DEVICE: f"GPU x{len(gpus)}" if gpus else f"CPU ({os.cpu_count()} cores)",
        contract.CPU: cpu(),
        contract.HOST: platform.node(),
        contract.PID: str(os.getpid()),
    }


def machine() -> dict[str, str]:
    """Where a benchmark ran: commit, versions and device (environment_tags without host and pid)."""
    return {k: v for k, v in environment_tags().items() if k not in (contract.HOST, contract.PID)}


def _alive(pid: int) -> bool:
    """A process with this pid runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_killed(c: MlflowClient, run_id: str) -> None:
    """End a run KILLED, tagged as such."""
    for key, value in contract.killed_tags().items():
        c.set_tag(run_id, key, value)
    c.set_terminated(run_id, "KILLED")


def close_stale(c: MlflowClient, experiment_id: str) -> int:
    """Runs (sweep parents and cells) left RUNNING by a process of this machine that no longer
    exists, e.g. a sweep killed with SIGKILL, end KILLED with `outcome=killed`. Runs of other
    machines, and of processes still alive, are left alone. Returns how many were closed."""
    here, closed = platform.node(), 0
    for r in c.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=50000):
        pid = r.data.tags.get(contract.PID)
        if (
            r.data.tags.get(contract.HOST) != here
            or not (pid or "").isdigit()
            or _alive(int(pid))
            or int(pid) == os.getpid()
        ):
            continue
        end_killed(c, r.info.run_id)
        closed += 1
    if closed:
        print(f"closed {closed} run(s) left RUNNING by a process that no longer exists (now KILLED)", flush=True)
    return closed


def resume(c: MlflowClient, experiment_id: str, fingerprint: str, sweep_id: str):
    """Before a sweep cell trains: runs of the same fingerprint left RUNNING by a killed sweep are
    marked KILLED; a FINISHED one is returned (and tagged as part of this sweep) to be reused."""
    prior = c.search_runs(
        [experiment_id],
        contract.fingerprint_query(fingerprint),
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    for r in prior:
        if r.info.status == "RUNNING":
            end_killed(c, r.info.run_id)
    done = next((r for r in prior if r.info.status == "FINISHED"), None)
    if done is not None:
        c.set_tag(done.info.run_id, f"{contract.REUSED}.{sweep_id}", "1")
    return done


class RunLogger:
    """One MLflow run: batched metrics (<= 1000 per request), params, tags, artifacts.

    With `background=True` full batches of metrics are sent by a worker thread while training goes
    on (on SQLite MLflow spends about 0.2 ms of Python per metric); `flush()` and every other call
    first wait for it, so what they write lands after every metric logged before them.

    Metrics the store does not take are spilled to `unsent_metrics_<run id>.jsonl` in `spill_dir`
    (default: the working folder), or, if that cannot be written, in the system's temporary
    folder; the TrackingError that follows says where and how many, and how many were lost if
    neither could be written. A full disk under the store or the artifacts is one TrackingError
    naming the path; an artifact copied in part is removed."""

    RETRIES = 4  # on top of MLflow's own HTTP retries; waits 1, 2, 4 s between tries

    def __init__(self, c: MlflowClient, run_id: str, spill_dir: str | Path | None = None, background: bool = False):
        self.client, self.run_id = c, run_id
        self.spill_dir = Path(spill_dir) if spill_dir else _working_folder()
        self._pending: list[Metric] = []
        self._background = background
        self._queue: queue.Queue | None = None
        # since the last TrackingError: the store's first refusal, metrics kept per file, metrics lost and why
        self._error: Exception | None = None
        self._kept: dict[Path, int] = {}
        self._lost = 0
        self._unwritable: dict[str, str] = {}

    def metrics(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, int(step)) for k, v in values.items()]
        if len(self._pending) >= MAX_METRICS_PER_BATCH:
            if self._background:
                self._hand_off(full_only=True)
            else:
                self.flush()

    def _deliver(self, chunk: list[Metric]) -> Exception | None:
        """Send one batch, with retries; the last error if the store never accepted it."""
        for attempt in range(self.RETRIES):
            try:
                self.client.log_batch(self.run_id, metrics=chunk)
                return None
            except Exception as err:  # noqa: PERF203 - network errors differ by store
                last = err
                if attempt < self.RETRIES - 1:
                    time.sleep(2**attempt)
        return last

    def _spill(self, metrics: list[Metric]) -> None:
        """Append the metrics to the spill file of the spill folder, else of the temporary folder: each
        file takes all of them or is left as it was (no partial line for the replay to choke on)."""
        data = "".join(
            json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}) + "\n"
            for m in metrics
        ).encode()
        for folder in dict.fromkeys([self.spill_dir, Path(tempfile.gettempdir())]):
            path = folder / f"unsent_metrics_{self.run_id}.jsonl"
            try:
                _append_whole(path, data)
            except OSError as err:
                self._unwritable.setdefault(str(path), err.strerror or type(err).__name__)
                continue
            self._kept[path] = self._kept.get(path, 0) + len(metrics)
            return
        self._lost += len(metrics)

    def _worker(self, q: queue.Queue) -> None:
        while True:
            chunk = q.get()
            try:
                if chunk is None:  # the run ended: the thread ends (and no longer holds this logger)
                    return
                err = self._deliver(chunk)
                if err is not None:
                    self._error = self._error or err
                    self._spill(chunk)
            except Exception as err:  # never leave a batch unfinished: _wait would block for ever
                self._error = self._error or err
                self._lost += len(chunk)
                self._unwritable.setdefault(str(self.spill_dir), f"{type(err).__name__}: {err}")
            finally:
                q.task_done()

    def _hand_off(self, full_only: bool = False) -> None:
        """Give the buffered metrics (or only full batches) to the worker thread, started once."""
        if self._queue is None:
            self._queue = queue.Queue()
            threading.Thread(
                target=self._worker, args=(self._queue,), name=f"mlflow-metrics-{self.run_id[:8]}", daemon=True
            ).start()
        while len(self._pending) >= (MAX_METRICS_PER_BATCH if full_only else 1):
            self._queue.put(self._pending[:MAX_METRICS_PER_BATCH])
            self._pending = self._pending[MAX_METRICS_PER_BATCH:]

    def _wait(self) -> None:
        """Until the worker has sent (or spilled) every batch handed to it; raise if one failed."""
        if self._queue is not None:
            self._queue.join()
        self._report_unsent()

    def _report_unsent(self) -> None:
        """A TrackingError saying what the store refused, where the unsent metrics are kept and how
        many are lost (then forgotten: the next failure is reported on its own)."""
        if self._error is None:
            return
        err, kept, lost, unwritable = self._error, self._kept, self._lost, self._unwritable
        self._error, self._kept, self._lost, self._unwritable = None, {}, 0, {}
        if _disk_full(err):
            what = f"{_no_space(self.client.tracking_uri)} while logging run {self.run_id}"
        else:
            what = (
                f"tracking store unreachable while logging run {self.run_id} "
                f"({type(err).__name__}: {redact(str(err))[:200]})"
            )
        said = [f"{n} metrics kept in {path}" for path, n in kept.items()]
        tried = ", ".join(f"{path} ({why})" for path, why in unwritable.items())
        if lost:
            said.append(f"{lost} metrics LOST: none of {tried} could be written")
        elif tried:
            said.append(f"not in {tried}")
        raise TrackingError(f"{what}; {'; '.join(said)}")

    def flush(self, wait: bool = True) -> None:
        """Send the buffered metrics; a chunk leaves the buffer only once the store accepted it.
        If the store stays unreachable, every unsent metric is written to a local JSON-lines file
        (`unsent_metrics_<run id>.jsonl`) and a TrackingError says where: nothing recorded is lost
        unless no file can be written either, and then the error says how many were.
        `wait=False` (background runs): hand the metrics to the worker and return."""
        if self._background and not wait:
            self._hand_off()
            return
        if self._queue is not None:
            self._queue.join()
        while self._pending and self._error is None:
            err = self._deliver(self._pending[:MAX_METRICS_PER_BATCH])
            if err is not None:
                self._error = err
                break
            self._pending = self._pending[MAX_METRICS_PER_BATCH:]
        if self._error is not None and self._pending:
            pending, self._pending = self._pending, []
            self._spill(pending)
        self._report_unsent()

    def _write(self, during: str):
        return _store_write(self.client.tracking_uri, f"while {during} of run {self.run_id}")

    def params(self, values: dict[str, object]) -> None:
        self._wait()
        items = [Param(k, redact(_param_str(v))[:6000]) for k, v in sorted(values.items())]
        with self._write("logging the params"):
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def tags(self, values: dict[str, object]) -> None:
        self._wait()
        items = [RunTag(k, redact(str(v))) for k, v in values.items()]
        with self._write("logging the tags"):
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH])

    def text(self, text: str, name: str) -> None:
        self._wait()
        with self._artifact_write(name, {name: len(text.encode())}):
            self.client.log_text(self.run_id, text, name)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._wait()
        name = f"{folder}/{Path(path).name}" if folder else Path(path).name
        with self._artifact_write(name, {name: _file_size(Path(path))}):
            self.client.log_artifact(self.run_id, str(path), folder)

    def artifacts(self, folder: str | Path, path: str | None = None) -> None:
        self._wait()
        files = {
            (f"{path}/" if path else "") + f.relative_to(folder).as_posix(): _file_size(f)
            for f in Path(folder).rglob("*")
            if f.is_file()
        }
        with self._artifact_write(f"{path or '.'}/ ({len(files)} files)", files):
            self.client.log_artifacts(self.run_id, str(folder), path)

    @contextlib.contextmanager
    def _artifact_write(self, name: str, sizes: dict[str, int]):
        """An artifact that cannot be written (full disk, unwritable folder) as one TrackingError
        naming the run's artifact folder; a file copied there in part (its size is not its source's)
        is removed, so nothing half-written stays among the run's artifacts."""
        try:
            yield
        except OSError as err:
            root = self._artifact_root()
            if isinstance(root, Path):
                for rel, size in sizes.items():
                    with contextlib.suppress(OSError):
                        if (root / rel).is_file() and (root / rel).stat().st_size != size:
                            (root / rel).unlink()
            where = root if root is not None else "the run's artifact folder"
            if err.errno == errno.ENOSPC:
                said = f"no space left on device for artifact folder {where} ({_free(Path(str(where)))})"
            else:
                said = f"artifact folder {where} is not writable ({err.strerror}: {err.filename or name})"
            raise TrackingError(f"{said}: artifact {name} of run {self.run_id} not written") from None

    def _artifact_root(self) -> Path | str | None:
        try:
            uri = self.client.get_run(self.run_id).info.artifact_uri
        except Exception:  # the store may be what failed
            return None
        if uri.startswith("file:"):
            from urllib.parse import unquote, urlparse

            return Path(unquote(urlparse(uri).path))
        return redact(uri)

    def end(self, status: str) -> None:
        try:
            self.flush()
        finally:
            self.stop()
        with self._write(f"ending ({status})"):
            self.client.set_terminated(self.run_id, status)

    def stop(self) -> None:
        """End the worker thread (after the batches handed to it); later metrics are sent inline."""
        if self._queue is not None:
            q, self._queue = self._queue, None
            q.put(None)
            q.join()


def _working_folder() -> Path:
    try:
        return Path.cwd()
    except OSError:  # the working folder was removed
        return Path(tempfile.gettempdir())


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _append_whole(path: Path, data: bytes) -> None:
    """Append all of `data` to the file or, on any error (a full disk), leave it as it was: cut
    back to its former length, removed if this call created it. Raises the OSError."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
                if created:
                    path.unlink()
            raise
    finally:
        os.close(fd)


def _param_str(v: object) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))
    return "null" if v is None else str(v)
