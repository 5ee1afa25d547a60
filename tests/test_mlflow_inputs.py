"""study.mlflow_inputs: a cell's splits as MLflow dataset inputs, in a real SQLite store."""

import json
import time

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from study import data, mlflow_inputs

SMALL = {"n_train": 256, "n_test": 64, "image_size": 12}


def _splits(**kw):
    return data.load("synthetic", **{"seed": 0, "val_fraction": 0.25, "options": SMALL, **kw})


def _run(client, name="exp"):
    exp = client.get_experiment_by_name(name) or client.get_experiment(client.create_experiment(name))
    return client.create_run(exp.experiment_id).info.run_id


def _logged(client, run_id) -> dict:
    inputs = client.get_run(run_id).inputs.dataset_inputs
    return {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}


def test_three_splits_are_the_runs_dataset_inputs(store):
    _, client = store
    splits, run_id = _splits(), _run(client)
    mlflow_inputs.log_datasets(client, run_id, splits)
    logged = _logged(client, run_id)
    assert set(logged) == {"train", "validation", "test"}
    sizes = {"train": 192, "validation": 64, "test": 64}
    for context, x, y in (
        ("train", splits.x_train, splits.y_train),
        ("validation", splits.x_val, splits.y_val),
        ("test", splits.x_test, splits.y_test),
    ):
        d = logged[context]
        assert d.name == "synthetic"
        assert d.digest == mlflow_inputs.digest(x, y, extra="4") and len(d.digest) == 16
        assert d.source_type == "code" and json.loads(d.source) == {"uri": "study.data._synthetic"}
        profile = json.loads(d.profile)
        assert profile["examples"] == len(x) == sizes[context]
        assert profile["features_shape"] == [len(x), 12, 12, 1] and profile["num_classes"] == 4
        assert "mlflow_tensorspec" in json.loads(d.schema)
    assert len({d.digest for d in logged.values()}) == 3

    # a second run on the same data gets the same digests, and MLflow reuses the experiment's datasets
    again = _run(client)
    mlflow_inputs.log_datasets(client, again, _splits())
    assert {c: d.digest for c, d in _logged(client, again).items()} == {c: d.digest for c, d in logged.items()}


def test_no_validation_split_and_a_named_local_source(store, tmp_path):
    _, client = store
    run_id = _run(client)
    mlflow_inputs.log_datasets(client, run_id, _splits(val_fraction=0.0), name="grating", source=str(tmp_path))
    logged = _logged(client, run_id)
    assert set(logged) == {"train", "test"}
    assert {d.name for d in logged.values()} == {"grating"}
    assert {d.source_type for d in logged.values()} == {"local"}
    assert json.loads(logged["train"].source) == {"uri": str(tmp_path)}


def test_same_data_same_digest_other_data_another():
    base = _splits()
    d = lambda s: mlflow_inputs.digest(s.x_train, s.y_train)  # noqa: E731
    assert d(base) == d(_splits()) == mlflow_inputs.digest(base.x_train.copy(), base.y_train.copy())
    others = [_splits(train_subset=100), _splits(seed=1), _splits(standardize=True), _splits(val_fraction=0.5)]
    assert len({d(base), *map(d, others)}) == 1 + len(others)
    # the sample visits every pixel position: one pixel changed in every example changes the digest
    x = base.x_train.copy()
    x[:, 5, 7, 0] += 0.5
    assert mlflow_inputs.digest(x, base.y_train) != d(base)
    y = base.y_train.copy()
    y[[0, 1]] = y[[1, 0]] if y[0] != y[1] else (y[0] + 1) % 4
    assert mlflow_inputs.digest(base.x_train, y) != d(base)  # every label counts


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (48_000, 28, 28)), (np.float32, (48_000, 28, 28, 1))])
def test_digest_of_fashion_mnist_sized_training_split_is_cheap(dtype, shape):
    x = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
    y = np.random.default_rng(1).integers(0, 10, shape[0]).astype(np.int32)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        mlflow_inputs.digest(x, y)
        times.append(time.perf_counter() - t)
    print(f"digest of {shape} {np.dtype(dtype)}: best {min(times) * 1e3:.2f} ms of 5")
    assert min(times) < 0.05


def test_an_mlflow_error_is_raised_for_the_caller_to_report(store):
    _, client = store
    run_id = _run(client)
    client.delete_run(run_id)
    with pytest.raises(MlflowException):
        mlflow_inputs.log_datasets(client, run_id, _splits())
