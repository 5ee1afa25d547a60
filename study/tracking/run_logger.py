"""One MLflow run's writer: batched metrics (in a background thread), params, tags, artifacts, and
metrics the store did not take spilled to a file for `make replay`."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import queue
import tempfile
import threading
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study.tracking.redaction import redact
from study.tracking.store import TrackingError, _disk_full, _free, _no_space, _store_write

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request
MAX_PARAMS_PER_BATCH = 100
# Keys left out of the config fingerprint: where results go and how they are launched, not what runs.


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
