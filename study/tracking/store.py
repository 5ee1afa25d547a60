"""The tracking store: one client per URI, a new SQLite store created and said, stores and artifact
folders checked before anything is recorded (full disks, read-only folders, other MLflow schemas),
a lost server waited for."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from study.tracking.redaction import redact

REPO_ROOT = Path(__file__).resolve().parents[2]


class _FullDiskFilter(logging.Filter):
    """MLflow logs a whole traceback for every SQLite error before it raises it; a full disk under
    the store is said here in one line naming the store (`_no_space`), so MLflow's is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database or disk is full" not in record.getMessage()


logging.getLogger("mlflow.store.db.utils").addFilter(_FullDiskFilter())


def default_uri() -> str:
    return f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


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
