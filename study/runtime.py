"""Process and Keras hygiene for cells trained one after another in one process: TensorFlow's threads
per job, a fresh Keras state and seed per cell, the garbage collector kept off the import-time
objects, the gradient functions a cell's traces registered dropped at its end, the optimizer's
state built before `fit` (one trace of the train step instead of two)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os

import keras
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from study import devices


class _RetracingNoise(logging.Filter):
    """Every cell builds a new model, so Keras traces new functions and TensorFlow warns that they
    'triggered tf.function retracing': expected here, and it drowned the cells' own lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_RetracingNoise())


def threads(cfg: DictConfig) -> int | None:
    """TensorFlow threads per job: `train.threads`, or with `auto` the cores divided among the
    joblib launcher's parallel jobs, or the CPUs Ray reserves per task (`ray.remote.num_cpus`,
    Ray's default 1) under the Ray launcher (None: TensorFlow's default, for one job at a time)."""
    t = cfg.train.threads
    if t != "auto":
        return int(t) if t else None
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    target = str(launcher.get("_target_", ""))
    if "ray" in target:
        return int(OmegaConf.select(launcher, "ray.remote.num_cpus", default=None) or 1)
    if "joblib" not in target:
        return None
    n_jobs = int(launcher.get("n_jobs", -1))
    cores = os.cpu_count() or 1
    return max(1, cores // (cores if n_jobs < 1 else n_jobs))


_frozen = False  # freeze_once has frozen this process's objects (a forked child inherits both)


def freeze_once() -> None:
    """Move what is alive before the first cell (TensorFlow, Keras, MLflow, Hydra, pandas: about
    700,000 objects) out of the garbage collector's reach, once per process, right after a
    collection. Every later collection, clear_session's and Python's automatic ones, then scans only
    what cells created: 0.09-0.17 s of collection a cell instead of 0.41-0.53 s (depth-8 grid cell,
    measured with gc.callbacks). What cells create is collected as before. Whether it is done is
    kept here: `gc.get_freeze_count()` walks the ~700,000 frozen objects, 50 ms a call."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def setup_keras(cfg: DictConfig) -> None:
    """Fresh Keras state and seeds for every cell (launchers may reuse worker processes); thread
    settings are fixed before TensorFlow starts and identical in every job of a sweep; on a machine
    with several GPUs each process takes its own (`study.devices.place`, once per process)."""
    devices.place()
    n = threads(cfg)
    if n and tf.config.threading.get_intra_op_parallelism_threads() != n:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)  # a CNN's ops run one after another
    freeze_once()
    keras.backend.clear_session()
    keras.utils.set_random_seed(int(cfg.seed))
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if cfg.train.mixed_precision else "float32")


@contextlib.contextmanager
def release_traced_gradients():
    """Drop the gradient functions TensorFlow registered while the cell traced its functions.

    Every trace of a function that uses tf.custom_gradient registers a gradient function in
    TensorFlow's process-wide gradient registry, and its closure holds the traced graph: tf.distribute's
    all_reduce, which Keras's optimizer calls in every train function, does so twice a cell, which kept
    every cell's graphs alive (the resident memory of a sweep grew 16-18 MiB a cell). Nothing
    differentiates through a cell's graphs once it has ended."""
    from tensorflow.python.framework import ops as tf_ops  # the registry is not public API

    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else set()
    try:
        yield
    finally:
        if isinstance(registry, dict):
            for name in [k for k in registry if k not in before and str(k).startswith("CustomGradient-")]:
                registry.pop(name, None)


def build_state(model, x, y) -> None:
    """Create the optimizer's, the loss's and the metrics' variables before `fit`, as Keras does
    itself under a distribution strategy (symbolically: nothing is computed, no random state is
    used). Without it TensorFlow traces the train function twice, because its first trace creates
    variables; with it once, which halves the tracing of the train step, the largest fixed cost of
    a short cell (profiled; effect in scripts/bench_cell.py). Same variables, same values, same
    results."""
    model._symbolic_build(data_batch=(x, y))
