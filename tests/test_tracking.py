"""MLflow tracking helpers: batching, flattening, fingerprints, redaction, artifact locations."""

import shutil
import threading

import pytest
from mlflow.tracking import MlflowClient

from study import tracking


class CountingClient(MlflowClient):
    """The real client, counting its log_batch requests."""

    calls: list[int] = []

    def log_batch(self, run_id, metrics=(), params=(), tags=(), **kw):
        self.calls.append(len(metrics))
        return super().log_batch(run_id, metrics=metrics, params=params, tags=tags, **kw)


def test_metrics_go_in_batches_of_at_most_1000(tmp_path, store):
    uri = store[0]
    c = CountingClient(tracking_uri=uri)
    exp = tracking.ensure_experiment(c, "t", tracking.artifact_location(uri))
    run = tracking.RunLogger(c, c.create_run(exp).info.run_id)
    for step in range(5):
        run.metrics({f"grad/conv_{i:02d}/l2": i * 0.5 + step for i in range(500)}, step=step)
    run.end("FINISHED")
    assert CountingClient.calls == [1000, 1000, 500]
    history = c.get_metric_history(run.run_id, "grad/conv_07/l2")
    assert [(h.step, h.value) for h in history] == [(s, 3.5 + s) for s in range(5)]


def test_metrics_sent_in_the_background_arrive_complete_and_before_what_follows(tmp_path, store):
    uri = store[0]
    CountingClient.calls = []
    c = CountingClient(tracking_uri=uri)
    exp = tracking.ensure_experiment(c, "t", tracking.artifact_location(uri))
    run = tracking.RunLogger(c, c.create_run(exp).info.run_id, background=True)
    for step in range(7):
        run.metrics({f"grad/conv_{i:02d}/l2": i * 0.5 + step for i in range(300)}, step=step)
        run.flush(wait=False)  # returns at once, as EpochLogger calls it
    run.tags({"outcome": "finished"})  # waits for the worker first
    assert sum(CountingClient.calls) == 2100 and max(CountingClient.calls) <= 1000
    assert [t.name for t in threading.enumerate() if t.name.startswith("mlflow-metrics-")] != []
    run.end("FINISHED")
    history = c.get_metric_history(run.run_id, "grad/conv_07/l2")
    assert [(h.step, h.value) for h in history] == [(s, 3.5 + s) for s in range(7)]
    # the worker thread ends with its run: a sweep process does not keep one (and its logger) per cell
    assert [t.name for t in threading.enumerate() if t.name.startswith("mlflow-metrics-")] == []


class LostClient(MlflowClient):
    """The real client of a store that stops accepting metrics."""

    def log_batch(self, run_id, metrics=(), params=(), tags=(), **kw):
        if metrics:
            raise ConnectionError("store gone")
        return super().log_batch(run_id, metrics=metrics, params=params, tags=tags, **kw)


def test_metrics_the_background_worker_cannot_send_are_kept_and_reported(tmp_path, store):
    uri = store[0]
    c = LostClient(tracking_uri=uri)
    exp = tracking.ensure_experiment(c, "t", tracking.artifact_location(uri))
    run = tracking.RunLogger(c, c.create_run(exp).info.run_id, spill_dir=tmp_path, background=True)
    run.RETRIES = 1
    for step in range(3):
        run.metrics({f"k{i}": float(i) for i in range(600)}, step=step)  # 1800: one batch to the worker
    with pytest.raises(tracking.TrackingError, match="1800 metrics kept in") as err:
        run.flush()
    spill = tmp_path / f"unsent_metrics_{run.run_id}.jsonl"
    assert str(spill) in str(err.value) and len(spill.read_text().splitlines()) == 1800


def test_one_client_per_store_per_process(tmp_path, store, empty_store):
    uri = store[0]
    shutil.copyfile(empty_store, tmp_path / "other.db")
    c = tracking.client(uri)
    assert tracking.client(uri) is c and tracking.client(f"sqlite:///{tmp_path}/other.db") is not c


def test_flatten_and_fingerprint_ignore_where_results_go():
    cfg = {
        "model": {"depth": 8, "activation": "relu"},
        "seed": 0,
        "tracking": {"uri": "sqlite:///a.db"},
        "train": {"epochs": 3, "verbose": 0},
    }
    flat = tracking.flatten(cfg)
    assert flat["model.depth"] == 8 and flat["tracking.uri"] == "sqlite:///a.db"
    other = tracking.flatten({**cfg, "tracking": {"uri": "http://x"}, "train": {"epochs": 3, "verbose": 1}})
    assert tracking.fingerprint(flat) == tracking.fingerprint(other)
    deeper = tracking.flatten({**cfg, "model": {"depth": 16, "activation": "relu"}})
    assert tracking.fingerprint(flat) != tracking.fingerprint(deeper)


def test_a_key_added_later_keeps_earlier_fingerprints_at_its_neutral_value():
    before = tracking.flatten({"model": {"depth": 8, "batch_norm": True}, "seed": 0})  # recorded before the key
    assert tracking.fingerprint({**before, "model.bn_momentum": 0.99}) == tracking.fingerprint(before)
    assert tracking.fingerprint({**before, "model.bn_momentum": 0.9}) != tracking.fingerprint(before)


def test_credentials_are_redacted():
    assert tracking.redact("postgresql://alice:s3cret@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    assert tracking.redact("http://user:pw@127.0.0.1:5000") == "http://***@127.0.0.1:5000"
    assert tracking.redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_reports_show_the_store_without_this_machines_paths(tmp_path):
    assert tracking.shown_uri(f"sqlite:///{tracking.REPO_ROOT}/mlflow.db") == "sqlite:///<repo>/mlflow.db"
    assert tracking.shown_uri(f"sqlite:///{tmp_path}/x/mlflow.db") == "sqlite:///<elsewhere>/mlflow.db"
    assert tracking.shown_uri("http://user:pw@10.0.0.1:5000") == "http://***@10.0.0.1:5000"


def test_artifacts_live_next_to_the_sqlite_file(tmp_path):
    assert tracking.artifact_location(f"sqlite:///{tmp_path}/x/mlflow.db") == (tmp_path / "x" / "mlartifacts").as_uri()
    assert tracking.artifact_location("http://127.0.0.1:5000") is None
