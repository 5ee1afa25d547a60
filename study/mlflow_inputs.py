"""A cell's data splits as MLflow dataset inputs: the UI's Dataset column and a run's "Datasets".

`log_datasets(client, run_id, splits)` logs one input per non-empty split of `data.load`'s Splits,
tagged `mlflow.data.context` = train / validation / test, named by the dataset (`fashion_mnist`),
with the split's size, shape and dtype as profile and a cheap digest (`digest`): shapes, dtypes and
a strided sample of each array's values (about 65,000 of them, spread over every example), plus
every label. Identical data gives the identical digest; another seed, subset or preprocessing
another one (MLflow stores one dataset per experiment and (name, digest)). Raises what MLflow raises:
the caller reports it in one line and trains on (the datasets are a convenience of the UI).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os

import numpy as np
from mlflow.data.schema import TensorDatasetSchema
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

SAMPLE = 1 << 16  # values hashed per array: about 1 ms for Fashion-MNIST's 37.6 million
SOURCES = {"digits": "sklearn.datasets.load_digits", "synthetic": "study.data._synthetic"}
CONTEXTS = (("train", "x_train", "y_train"), ("validation", "x_val", "y_val"), ("test", "x_test", "y_test"))


def digest(*arrays: np.ndarray, extra: str = "") -> str:
    """16 hex digits over each array's dtype, shape and a strided sample of its values; the stride
    is coprime with an example's size, so the sample visits every pixel position, not one column."""
    h = hashlib.blake2b(extra.encode(), digest_size=8)
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        flat, row = a.reshape(-1), math.prod(a.shape[1:])  # a view of a contiguous array
        step = next(s for s in itertools.count(max(1, flat.size // SAMPLE)) if math.gcd(s, row) == 1)
        h.update(np.ascontiguousarray(flat[::step]).tobytes())
    return h.hexdigest()


def source_of(name: str) -> str:
    """Where the harness reads dataset `name` from (Fashion-MNIST: the Keras cache folder)."""
    if name == "fashion_mnist":
        from study.data import keras_fashion_dir

        return str(keras_fashion_dir())
    return SOURCES.get(name, name)


def dataset_inputs(splits, name: str | None = None, source: str | None = None) -> list[DatasetInput]:
    """One DatasetInput per non-empty split (a run with `data.val_fraction=0` has no validation)."""
    name, source = name or splits.name, source or source_of(splits.name)
    kind = "local" if os.path.isabs(source) else "code"  # the UI links a local source's uri
    inputs = []
    for context, xs, ys in CONTEXTS:
        x, y = getattr(splits, xs), getattr(splits, ys)
        if not len(x):
            continue
        spec = TensorDatasetSchema(
            features=Schema([TensorSpec(x.dtype, (-1, *x.shape[1:]))]),
            targets=Schema([TensorSpec(y.dtype, (-1, *y.shape[1:]))]),
        )
        profile = {"examples": len(x), "num_classes": splits.num_classes, "features_shape": list(x.shape)}
        profile |= {"features_dtype": str(x.dtype), "targets_shape": list(y.shape)}
        sums = digest(x, y, extra=f"{splits.num_classes}")
        entity = Dataset(name, sums, kind, json.dumps({"uri": source}), json.dumps(spec.to_dict()), json.dumps(profile))
        inputs.append(DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return inputs


def log_datasets(client, run_id: str, splits, name: str | None = None, source: str | None = None) -> None:
    """Log the splits as the run's dataset inputs (one request); raises MLflow's error."""
    client.log_inputs(run_id, datasets=dataset_inputs(splits, name, source))
