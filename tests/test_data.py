"""Datasets: shapes, splits, seeds; the real Fashion-MNIST files."""

import numpy as np
import pytest

from study import data


def test_synthetic_is_deterministic_and_split_by_seed():
    a = data.load("synthetic", seed=0, val_fraction=0.25, options={"n_train": 200, "n_test": 50, "image_size": 12})
    b = data.load("synthetic", seed=0, val_fraction=0.25, options={"n_train": 200, "n_test": 50, "image_size": 12})
    c = data.load("synthetic", seed=1, val_fraction=0.25, options={"n_train": 200, "n_test": 50, "image_size": 12})
    assert (
        a.x_train.shape == (150, 12, 12, 1) and a.x_val.shape == (50, 12, 12, 1) and a.x_test.shape == (50, 12, 12, 1)
    )
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    np.testing.assert_array_equal(a.x_test, c.x_test)  # the test set does not depend on the seed
    np.testing.assert_array_equal(a.x_probe, c.x_probe)  # nor does the probe batch
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0


def test_validation_is_disjoint_from_training_and_subsets_apply():
    s = data.load("digits", seed=3, val_fraction=0.1, train_subset=500, test_subset=100)
    assert s.input_shape == (8, 8, 1) and s.num_classes == 10
    assert len(s.x_train) == 500 and len(s.x_test) == 100 and len(s.x_val) == 150
    tr, va = {r.tobytes() for r in s.x_train}, [r.tobytes() for r in s.x_val]
    assert sum(v in tr for v in va) <= 5  # digits holds a few exact duplicate images, no more


def test_fashion_mnist_real_files():
    s = data.load("fashion_mnist", seed=0, val_fraction=0.1)
    assert s.x_train.shape == (54000, 28, 28, 1) and s.x_val.shape == (6000, 28, 28, 1)
    assert s.x_test.shape == (10000, 28, 28, 1) and s.num_classes == 10
    assert set(np.unique(s.y_test)) == set(range(10)) and np.bincount(s.y_test).tolist() == [1000] * 10


def test_a_process_reads_a_dataset_once_and_every_cell_gets_the_same_splits():
    data._raw.cache_clear()
    first = data.load("fashion_mnist", seed=2, val_fraction=0.1, train_subset=512)
    for seed in (0, 1, 2):  # later cells of a sweep, other seeds in between
        later = data.load("fashion_mnist", seed=seed, val_fraction=0.1, train_subset=512)
    info = data._raw.cache_info()
    assert info.misses == 1 and info.hits == 3  # decompressed and parsed once
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "x_probe"):
        np.testing.assert_array_equal(getattr(first, name), getattr(later, name))  # the cache was not mutated


def test_pipeline_batches_and_seeded_shuffle():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    first = [b[1].numpy().tolist() for b in data.pipeline(x, y, 4, shuffle_seed=7)]
    again = [b[1].numpy().tolist() for b in data.pipeline(x, y, 4, shuffle_seed=7)]
    assert first == again and [len(b) for b in first] == [4, 4, 2] and sorted(sum(first, [])) == list(range(10))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"name": "cifar"}, ["cifar", "fashion_mnist", "digits", "synthetic"]),
        ({"name": "digits", "train_subset": 99999}, ["train_subset=99999"]),
        ({"name": "digits", "val_fraction": 1.5}, ["val_fraction=1.5"]),
    ],
)
def test_bad_data_options_are_named(kwargs, words):
    with pytest.raises(ValueError) as err:
        data.load(seed=0, **kwargs)
    assert all(w in str(err.value) for w in words)
