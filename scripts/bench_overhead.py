"""Overhead of the diagnostics: median time per epoch of (a) plain Keras `model.fit`, (b) the harness
with diagnostics=default, (c) with diagnostics=full, and (d) an ablation, `full` with its activation
statistics taken over a 1×1 stand-in instead of every activation output (what the passes over the
activations cost); same model, data and batch size, in one process.
Each variant's model is built once and warmed up; then one-epoch fits alternate (a b c, b c a, ...),
each timed from the epoch's start to its end (validation and the harness's callbacks included).

Writes reports/benchmarks/overhead.json; the last line printed is `overhead default=<b/a> full=<c/a>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from study import data, models, outputs, tracking  # noqa: E402
from study import diagnostics as diag
from study.callbacks import DiagnosticsLogger, HistogramLogger  # noqa: E402

# variant -> its diagnostics level (None: plain Keras)
LEVEL = {"plain": None, "default": "default", "full": "full", "full_without_activation_stats": "full"}
VARIANTS = tuple(LEVEL)


class WithoutActivationStats(diag.DiagnosticModel):
    """Ablation, for this benchmark only: the `full` train step, the activation outputs h_l and their
    back-propagated gradients computed as always, but the activation statistics (mean, std, spread,
    saturation or zero and dead fractions) taken over a 1×1 stand-in instead of each h_l."""

    def diag_vector(self, grads, grads_h, acts, inv, before):
        return super().diag_vector(grads, grads_h, [tf.zeros((1, 1)) for _ in acts], inv, before)


class TimedHistogramLogger(HistogramLogger):
    """HistogramLogger keeping the seconds of its last epoch-end record (probe pass and binning)."""

    seconds = 0.0

    def on_epoch_end(self, epoch, logs=None):
        t = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.seconds = time.perf_counter() - t


def build(variant: str, args, splits, run: tracking.RunLogger):
    """A compiled model and its callbacks: plain Keras, or the harness at a diagnostics level."""
    keras.utils.set_random_seed(0)
    spec = models.ModelSpec(depth=args.depth, width=args.width, activation=args.activation)
    model = models.build(spec, splits.input_shape, splits.num_classes)
    level = LEVEL[variant]
    if level is not None:
        kind = WithoutActivationStats if variant == "full_without_activation_stats" else diag.DiagnosticModel
        model = kind(model.inputs, model.outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    steps = -(-len(splits.x_train) // args.batch_size)
    callbacks = []
    if level is not None:
        model.enable_diagnostics(level, args.activation)
        callbacks.append(DiagnosticsLogger(run, max(1, steps * 3 // 50), steps, splits.x_probe, splits.y_probe))
    if level == "full":  # histograms at the end of every timed epoch (a 3-epoch run draws two): conservative
        callbacks.append(TimedHistogramLogger(splits.x_probe, splits.y_probe, {1}, steps))
    return model, callbacks


class EpochTimer(keras.callbacks.Callback):
    """Last in the list: the epoch's time includes the other callbacks' work, not fit's start-up."""

    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.t


def timed_epoch(model, callbacks, splits, args) -> float:
    ds = data.pipeline(splits.x_train, splits.y_train, args.batch_size, shuffle_seed=0)
    val = data.pipeline(splits.x_val, splits.y_val, 1024)
    timer = EpochTimer()
    model.fit(ds, validation_data=val, epochs=1, verbose=0, callbacks=[*callbacks, timer], shuffle=False)
    return timer.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--train-subset", type=int, default=3072)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=8, help="timed epochs per variant, after one warm-up epoch")
    p.add_argument("--out", default=str(tracking.REPO_ROOT / "reports" / "benchmarks" / "overhead.json"))
    args = p.parse_args()
    outputs.result_file(args.out)  # before minutes of measuring
    splits = data.load(args.dataset, seed=0, train_subset=args.train_subset)
    variants = VARIANTS
    times: dict[str, list[float]] = {v: [] for v in variants}
    histogram_s: list[float] = []  # full: the histogram record inside each timed epoch
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        c = tracking.client(uri)
        exp = tracking.ensure_experiment(c, "bench", tracking.artifact_location(uri))
        run = tracking.RunLogger(c, c.create_run(exp).info.run_id)
        built = {v: build(v, args, splits, run) for v in variants}
        for v in variants:  # warm-up: tracing and first-epoch effects are left out
            timed_epoch(*built[v], splits, args)
        for rep in range(args.reps):  # interleaved, order rotated, so drift of a shared machine hits all alike
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for v in order:
                times[v].append(timed_epoch(*built[v], splits, args))
                if v == "full":
                    histogram_s.append(next(c for c in built[v][1] if isinstance(c, TimedHistogramLogger)).seconds)
            print(f"rep {rep + 1}/{args.reps} " + " ".join(f"{v}={times[v][-1]:.2f}s" for v in variants), flush=True)
        run.flush()
    med = {v: statistics.median(t) for v, t in times.items()}
    result = {
        "median_epoch_s": med,
        "default_over_plain": med["default"] / med["plain"],
        "full_over_plain": med["full"] / med["plain"],
        "full_without_activation_stats_over_plain": med["full_without_activation_stats"] / med["plain"],
        "full_histogram_record_s": statistics.median(histogram_s),
        "epoch_times_s": times,
        "config": vars(args),
        "machine": tracking.machine(),
    }
    outputs.write_json(args.out, result)
    print(
        f"median epoch: plain {med['plain']:.3f} s, default {med['default']:.3f} s, full {med['full']:.3f} s, "
        f"full without activation statistics {med['full_without_activation_stats']:.3f} s; "
        f"full's histogram record {result['full_histogram_record_s']:.3f} s of its epoch"
    )
    print(f"overhead default={result['default_over_plain']:.2f} full={result['full_over_plain']:.2f}")


if __name__ == "__main__":
    main()
