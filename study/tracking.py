"""MLflow tracking: stores, experiments, runs, params, batched metrics, artifacts, fingerprints.

Everything goes through an explicit `MlflowClient(uri)` (no global fluent state), so several stores
can be used in one process and tests point runs at a temporary SQLite file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import queue
import re
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
    path.parent.mkdir(parents=True, exist_ok=True)
    # MLflow creates and migrates a SQLite schema on first use, and two processes doing that at once
    # fail ("table ... already exists", alembic_version): the first use happens under a file lock.
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        new = not path.exists() or path.stat().st_size == 0
        try:
            c = MlflowClient(tracking_uri=uri)
            c.search_experiments(max_results=1)
        except Exception as err:
            schema = _schema_error(path, err)
            if schema is None:
                raise
            raise schema from None

    if new:
        print(f"new tracking store created at {path}", file=sys.stderr, flush=True)
    return c


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


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_sqlite(uri: str, must_exist: bool = False) -> None:
    """A SQLite store must be a SQLite file (or, when it may be created, absent) in a folder this
    process can write (SQLite writes a journal beside it). Checked before MLflow touches it: MLflow
    retries for minutes and then fails with tracebacks that do not name the file."""
    path = sqlite_path(uri)
    if path is None:
        return
    if path.exists():
        if path.is_dir():
            raise TrackingError(f"tracking store {path} is a folder, not a SQLite file")
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise TrackingError(
                f"tracking store {path} is not a SQLite database (left untouched); "
                "point tracking.uri at an MLflow SQLite file or a new path"
            )
    elif must_exist:
        raise TrackingError(
            f"no tracking store at {path} (nothing created); runs are recorded by "
            "`make sweep`, or pass --tracking-uri of an existing store"
        )
    folder = path.parent if path.parent.exists() else next(p for p in path.parents if p.exists())
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise TrackingError(
            f"tracking store {path}: folder {folder} is not writable ({err.strerror}); "
            "set tracking.uri to a store in a writable folder"
        ) from None


def check_store(uri: str, artifacts: str | None, timeout: float = 5.0) -> None:
    """Fail fast and clearly: an unreachable tracking server, a SQLite store that is not a database
    or cannot be written, or an artifact folder not writable."""
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
    if artifacts and artifacts.startswith("file:"):
        from urllib.parse import unquote, urlparse

        folder = Path(unquote(urlparse(artifacts).path))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise TrackingError(
                f"artifact folder {folder} is not writable ({err.strerror}); "
                "set tracking.artifact_location to a writable folder"
            ) from None


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
    """The experiment's id (created if needed, with its description)."""
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = c.create_experiment(name, artifact_location=artifacts)
        except Exception:  # created meanwhile by another process
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
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
        "git_commit": git_commit(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "device": f"GPU x{len(gpus)}" if gpus else f"CPU ({os.cpu_count()} cores)",
        "cpu": cpu(),
        "host": platform.node(),
        "pid": str(os.getpid()),
    }


def machine() -> dict[str, str]:
    """Where a benchmark ran: commit, versions and device (environment_tags without host and pid)."""
    return {k: v for k, v in environment_tags().items() if k not in ("host", "pid")}


def _alive(pid: int) -> bool:
    """A process with this pid runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_stale(c: MlflowClient, experiment_id: str) -> int:
    """Runs (sweep parents and cells) left RUNNING by a process of this machine that no longer
    exists, e.g. a sweep killed with SIGKILL, end KILLED with `outcome=killed`. Runs of other
    machines, and of processes still alive, are left alone. Returns how many were closed."""
    here, closed = platform.node(), 0
    for r in c.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=50000):
        pid = r.data.tags.get("pid")
        if r.data.tags.get("host") != here or not (pid or "").isdigit() or _alive(int(pid)) or int(pid) == os.getpid():
            continue
        c.set_tag(r.info.run_id, "outcome", "killed")
        c.set_terminated(r.info.run_id, "KILLED")
        closed += 1
    if closed:
        print(f"closed {closed} run(s) left RUNNING by a process that no longer exists (now KILLED)", flush=True)
    return closed


def resume(c: MlflowClient, experiment_id: str, fingerprint: str, sweep_id: str):
    """Before a sweep cell trains: runs of the same fingerprint left RUNNING by a killed sweep are
    marked KILLED; a FINISHED one is returned (and tagged as part of this sweep) to be reused."""
    prior = c.search_runs(
        [experiment_id],
        f"tags.fingerprint = '{fingerprint}' and tags.role = 'cell'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    for r in prior:
        if r.info.status == "RUNNING":
            c.set_tag(r.info.run_id, "outcome", "killed")
            c.set_terminated(r.info.run_id, "KILLED")
    done = next((r for r in prior if r.info.status == "FINISHED"), None)
    if done is not None:
        c.set_tag(done.info.run_id, f"{contract.REUSED}.{sweep_id}", "1")
    return done


class RunLogger:
    """One MLflow run: batched metrics (<= 1000 per request), params, tags, artifacts.

    With `background=True` full batches of metrics are sent by a worker thread while training goes
    on (on SQLite MLflow spends about 0.2 ms of Python per metric); `flush()` and every other call
    first wait for it, so what they write lands after every metric logged before them."""

    RETRIES = 4  # on top of MLflow's own HTTP retries; waits 1, 2, 4 s between tries

    def __init__(self, c: MlflowClient, run_id: str, spill_dir: str | Path | None = None, background: bool = False):
        self.client, self.run_id = c, run_id
        self.spill_dir = Path(spill_dir or Path.cwd())
        self._pending: list[Metric] = []
        self._background = background
        self._queue: queue.Queue | None = None
        self._failure: tuple[Exception, int] | None = None  # a background send that failed, metrics spilled

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

    def _spill(self, metrics: list[Metric]) -> Path:
        path = self.spill_dir / f"unsent_metrics_{self.run_id}.jsonl"
        with path.open("a") as f:
            for m in metrics:
                f.write(json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}) + "\n")
        return path

    def _worker(self, q: queue.Queue) -> None:
        while True:
            chunk = q.get()
            if chunk is None:  # the run ended: the thread ends (and no longer holds this logger)
                q.task_done()
                return
            err = self._deliver(chunk)
            if err is not None:
                self._spill(chunk)
                n = len(chunk) + (self._failure[1] if self._failure else 0)
                self._failure = (self._failure[0] if self._failure else err, n)
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
        if self._failure is not None:
            (err, n), self._failure = self._failure, None
            self._lost(err, n)

    def _lost(self, err: Exception, n: int):
        path = self.spill_dir / f"unsent_metrics_{self.run_id}.jsonl"
        raise TrackingError(
            f"tracking store unreachable while logging run {self.run_id} "
            f"({type(err).__name__}: {redact(str(err))[:200]}); {n} metrics kept in {path}"
        )

    def flush(self, wait: bool = True) -> None:
        """Send the buffered metrics; a chunk leaves the buffer only once the store accepted it.
        If the store stays unreachable, every unsent metric is written to a local JSON-lines file
        (`unsent_metrics_<run id>.jsonl`) and a TrackingError says where: nothing recorded is lost.
        `wait=False` (background runs): hand the metrics to the worker and return."""
        if self._background and not wait:
            self._hand_off()
            return
        if self._queue is not None:
            self._queue.join()
        failure, self._failure = self._failure, None
        while self._pending and failure is None:
            err = self._deliver(self._pending[:MAX_METRICS_PER_BATCH])
            if err is not None:
                failure = (err, 0)
                break
            self._pending = self._pending[MAX_METRICS_PER_BATCH:]
        if failure is not None:
            err, n = failure
            if self._pending:
                self._spill(self._pending)
                n, self._pending = n + len(self._pending), []
            self._lost(err, n)

    def params(self, values: dict[str, object]) -> None:
        self._wait()
        items = [Param(k, redact(_param_str(v))[:6000]) for k, v in sorted(values.items())]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def tags(self, values: dict[str, object]) -> None:
        self._wait()
        items = [RunTag(k, redact(str(v))) for k, v in values.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + MAX_PARAMS_PER_BATCH])

    def text(self, text: str, name: str) -> None:
        self._wait()
        self.client.log_text(self.run_id, text, name)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._wait()
        self.client.log_artifact(self.run_id, str(path), folder)

    def artifacts(self, folder: str | Path, path: str | None = None) -> None:
        self._wait()
        self.client.log_artifacts(self.run_id, str(folder), path)

    def end(self, status: str) -> None:
        try:
            self.flush()
        finally:
            self.stop()
        self.client.set_terminated(self.run_id, status)

    def stop(self) -> None:
        """End the worker thread (after the batches handed to it); later metrics are sent inline."""
        if self._queue is not None:
            q, self._queue = self._queue, None
            q.put(None)
            q.join()


def _param_str(v: object) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))
    return "null" if v is None else str(v)
