"""Datasets -> numpy splits -> tf.data pipelines.

Registry DATASETS: fashion_mnist (default; keras.datasets, with Debian's `dataset-fashion-mnist`
files as the offline source), digits (scikit-learn's bundled 8×8 digits) and synthetic (generated,
deterministic, learnable; for tests). All give images as float32 NHWC in [0, 1] and int labels.
The validation split comes from the training data; the test set is never seen by training.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.errors import ConfigError, unknown

FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Splits:
    """Train / validation / test arrays; x is float32 NHWC in [0, 1], y int32 class ids."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    x_probe: np.ndarray  # the first examples of the unshuffled training data: the same for every seed
    y_probe: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def keras_fashion_dir() -> Path:
    """Where keras.datasets.fashion_mnist looks for its four files."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets" / "fashion-mnist"


def fashion_mnist_available() -> bool:
    return all((keras_fashion_dir() / f).exists() for f in FASHION_FILES)


def link_debian_fashion_mnist() -> bool:
    """Copy Debian's Fashion-MNIST files into the Keras cache; False if the package is absent."""
    if not all((DEBIAN_FASHION_DIR / f).exists() for f in FASHION_FILES):
        return False
    target = keras_fashion_dir()
    target.mkdir(parents=True, exist_ok=True)
    for f in FASHION_FILES:
        if not (target / f).exists():
            shutil.copyfile(DEBIAN_FASHION_DIR / f, target / f)
    return True


FASHION_HELP = (
    "Fashion-MNIST is not available and could not be downloaded. Run `make data` (as root on "
    "Debian it installs the package `dataset-fashion-mnist` with apt-get), or install that "
    "package yourself (`sudo apt-get install dataset-fashion-mnist`), or copy the four files "
    f"{', '.join(FASHION_FILES)} into {keras_fashion_dir()}/."
)


def _fashion_mnist():
    import keras

    if not fashion_mnist_available():
        link_debian_fashion_mnist()
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as err:  # keras raises a bare Exception when the download fails
        raise RuntimeError(FASHION_HELP) from err
    return x_train[..., None] / 255.0, y_train, x_test[..., None] / 255.0, y_test, 10


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0)[..., None]
    # A fixed split (not the run seed): the test set is the same for every run.
    order = np.random.default_rng(12345).permutation(len(x))
    x, y = x[order], d.target[order]
    return x[:1497], y[:1497], x[1497:], y[1497:], 10


def _synthetic(n_train: int = 2048, n_test: int = 512, image_size: int = 28, num_classes: int = 4):
    """Class k is a sinusoidal grating at orientation k·π/num_classes with a random phase, plus
    noise: a local texture that a small CNN with global pooling learns in a few steps."""
    rng = np.random.default_rng(2010)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float64)

    def draw(n):
        y = rng.integers(0, num_classes, size=n)
        theta = y * np.pi / num_classes
        phase = rng.uniform(0, 2 * np.pi, size=n)
        wave = np.cos(
            2 * np.pi / 6 * (np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy)
            + phase[:, None, None]
        )
        x = 0.5 + 0.3 * wave + 0.2 * rng.standard_normal((n, image_size, image_size))
        return np.clip(x, 0.0, 1.0)[..., None], y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return x_train, y_train, x_test, y_test, num_classes


DATASETS = {"fashion_mnist": _fashion_mnist, "digits": _digits, "synthetic": _synthetic}


@functools.lru_cache(maxsize=4)
def _raw(name: str, options_json: str):
    """Cached per process: the cells of a sweep in one worker read a dataset once."""
    return DATASETS[name](**json.loads(options_json))


def _check_subsets(name: str, n_train: int, n_test: int, train_subset, test_subset) -> None:
    for what, subset, n in (("train_subset", train_subset, n_train), ("test_subset", test_subset, n_test)):
        if subset is not None and not 1 <= subset <= n:
            raise ConfigError(f"data.{what}={subset} must be between 1 and {n} for dataset {name!r}")


def train_size(
    name: str,
    *,
    val_fraction: float = 0.1,
    train_subset: int | None = None,
    test_subset: int | None = None,
    options: dict | None = None,
) -> int:
    """The number of training examples `load` would return (same checks, same errors), from the
    dataset's sizes: lets a sweep check every cell against its data before the first one trains."""
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction={val_fraction} must be in [0, 1)")
    x_tr, _, x_te, _, _ = _raw(name, json.dumps(options or {}, sort_keys=True))
    n_train = len(x_tr) - int(round(val_fraction * len(x_tr)))
    _check_subsets(name, n_train, len(x_te), train_subset, test_subset)
    return n_train if train_subset is None else train_subset


def load(
    name: str,
    *,
    seed: int,
    val_fraction: float = 0.1,
    train_subset: int | None = None,
    test_subset: int | None = None,
    options: dict | None = None,
    probe_size: int = 256,
    standardize: bool = False,
) -> Splits:
    """Load a dataset, shuffle the training data by `seed`, split off validation, subset; with
    `standardize`, every split (and the probe) has the training split's mean pixel value subtracted
    and is divided by its standard deviation (two scalars, from the training examples kept)."""
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction={val_fraction} must be in [0, 1)")
    x_tr, y_tr, x_te, y_te, num_classes = _raw(name, json.dumps(options or {}, sort_keys=True))
    x_probe, y_probe = x_tr[:probe_size], y_tr[:probe_size]
    order = np.random.default_rng(seed).permutation(len(x_tr))
    n_val = int(round(val_fraction * len(x_tr)))
    _check_subsets(name, len(x_tr) - n_val, len(x_te), train_subset, test_subset)
    # index once with the examples kept: copying the whole shuffled set took seconds per cell
    val, tr = order[:n_val], order[n_val:][:train_subset]
    x_val, y_val, x_tr, y_tr = x_tr[val], y_tr[val], x_tr[tr], y_tr[tr]
    if test_subset is not None:
        x_te, y_te = x_te[:test_subset], y_te[:test_subset]
    f32, i32 = np.float32, np.int32
    if standardize:
        mean, std = float(x_tr.mean()), float(x_tr.std()) or 1.0
        x_tr, x_val, x_te, x_probe = ((a - mean) / std for a in (x_tr, x_val, x_te, x_probe))
    return Splits(
        x_tr.astype(f32),
        y_tr.astype(i32),
        x_val.astype(f32),
        y_val.astype(i32),
        x_te.astype(f32),
        y_te.astype(i32),
        num_classes,
        name,
        x_probe.astype(f32),
        y_probe.astype(i32),
    )


def pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle_seed: int | None = None):
    """A tf.data pipeline; shuffled per epoch (seeded) when `shuffle_seed` is given, prefetched."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def main() -> None:
    """`python -m study.data`: make Fashion-MNIST available to keras.datasets (used by `make data`)."""
    if fashion_mnist_available() or link_debian_fashion_mnist():
        print(f"Fashion-MNIST ready in {keras_fashion_dir()}")
        return
    try:
        _fashion_mnist()
        print(f"Fashion-MNIST downloaded to {keras_fashion_dir()}")
    except RuntimeError as err:
        raise SystemExit(str(err)) from None


if __name__ == "__main__":
    main()
