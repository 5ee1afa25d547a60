"""Keras callbacks used during training, and their assembly for one cell (`recorders`): per-epoch
metric logging, divergence detection (Keras's own train step), diagnostics logging, histograms,
curvature. (The Hydra sweep callback is in `study.sweep`.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd

from study import contract, curvature, tracking, verdicts
from study import diagnostics as diag

if TYPE_CHECKING:
    from study.config import CellPlan


class EpochLogger(keras.callbacks.Callback):
    """Logs `train/loss`, `train/accuracy`, `val/loss`, `val/accuracy`, the learning rate of the
    epoch's first step `train/learning_rate` and the training time so far `time/elapsed_s` (step =
    epoch) in one batch; with a `StepTimer`, also `time/steps_s`, the seconds inside train steps so far."""

    def __init__(self, run: tracking.RunLogger, timer: StepTimer | None = None):
        super().__init__()
        self.run, self.timer = run, timer
        self.epochs_done = 0
        self.rows: list[dict] = []
        self._t0, self._lr = time.perf_counter(), float("nan")

    def on_train_begin(self, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        values = {}
        for k, v in (logs or {}).items():
            split, name = ("val", k[4:]) if k.startswith("val_") else ("train", k)
            if name in ("loss", "accuracy"):
                values[f"{split}/{name}"] = float(v)
        values["train/learning_rate"] = self._lr
        values["time/elapsed_s"] = time.perf_counter() - self._t0
        if self.timer is not None:
            values["time/steps_s"] = self.timer.total
        self.run.metrics(values, step=epoch)
        self.run.flush(wait=False)  # visible in the UI as the run goes (sent in the background)
        self.epochs_done = epoch + 1
        self.rows += [{"epoch": epoch, "metric": k, "value": v} for k, v in values.items()]

    def final(self) -> dict[str, float]:
        """Each per-epoch metric's value at the last epoch logged."""
        return {r["metric"]: r["value"] for r in self.rows if r["epoch"] == self.rows[-1]["epoch"]} if self.rows else {}

    def table(self) -> pd.DataFrame:
        """epoch, metric, value: the per-epoch curves (also in MLflow), one file for the report."""
        return pd.DataFrame(self.rows, columns=["epoch", "metric", "value"])


class StepTimer(keras.callbacks.Callback):
    """Seconds inside the train steps (`train.time_steps`): from the last `on_train_batch_begin`
    hook (it runs after every other callback's, e.g. a curvature measurement) to the batch's end,
    where Keras has waited for the step's results (a batch-end hook makes its batch callbacks
    synchronous: the reason this is not on by default). Leaves out validation, epoch-end logging
    and reading the statistics. Must be the last callback."""

    def __init__(self):
        super().__init__()
        self.total, self._t = 0.0, None

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._t is not None:
            self.total += time.perf_counter() - self._t
            self._t = None


class DivergenceGuard(keras.callbacks.Callback):
    """Keras's own train step (diagnostics off): stops training at the first non-finite batch
    loss; the run is then a result, `diverged`. (With diagnostics on, the train step itself stops
    at a non-finite loss and `DiagnosticsLogger` notices; see `DiagnosticModel.train_step`.)"""

    def __init__(self):
        super().__init__()
        self.diverged_at: int | None = None
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = self._step
            self.model.stop_training = True
        self._step += 1


class DiagnosticsLogger(keras.callbacks.Callback):
    """Reads the train step's statistics a block of steps at a time (at most
    `model.diag_block_steps`, and at every epoch's end) and keeps every row; logs scalars to MLflow
    every `log_every` steps; stops training once the train step saw a non-finite loss
    (`diverged_at`); probes the forward and backward signal through depth on a fixed batch at
    initialisation and after training; at the end writes the step-level table and the per-run
    summary (the verdict's evidence, see study/verdicts.py).

    It has no per-batch-end hook, so Keras dispatches batch callbacks asynchronously and nothing
    waits for the device between blocks."""

    def __init__(self, run: tracking.RunLogger, log_every: int, steps_per_epoch: int, x_probe=None, y_probe=None):
        super().__init__()
        self.run, self.log_every, self.steps_per_epoch = run, max(1, log_every), steps_per_epoch
        self.x_probe, self.y_probe = x_probe, y_probe
        self.rows: list[np.ndarray] = []
        self.signal: list[dict] = []  # phase (init / end), layer, layer_index, spread, rms, backprop_rms, dead_frac
        self.summary: dict[str, float] = {}
        self.diverged_at: int | None = None
        self._read_to, self._epoch_start = 0, 0

    def _probe(self, phase: str) -> None:
        if self.x_probe is not None and len(self.x_probe) > 1:
            self.signal += [
                {"phase": phase, **row} for row in diag.signal_profile(self.model, self.x_probe, self.y_probe)
            ]

    def _read(self) -> None:
        """Fetch the rows written since the last read; log every `log_every`-th; stop on divergence."""
        block = self.model.diag_read(self._read_to)
        keys = [s.key for s in self.model.diag_stats]
        scheduled = self.model.diag_activation_steps(np.arange(self._read_to, self._read_to + len(block)))
        per_step = [s.group not in (contract.ACT, contract.BACKPROP) for s in self.model.diag_stats]
        for i, vec in enumerate(block, start=self._read_to):
            self.rows.append(vec)
            if i % self.log_every == 0:  # activation statistics only where the schedule computed them
                keep = per_step if not scheduled[i - self._read_to] else [True] * len(keys)
                self.run.metrics({k: v for k, v, ok in zip(keys, vec.tolist(), keep) if ok}, step=i)
        self._read_to += len(block)
        diverged = self.model.diag_diverged_step()
        if diverged >= 0 and self.diverged_at is None:
            self.diverged_at = diverged
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self._probe("init")
        self._read_to = self.model.diag_steps()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._read_to

    def on_train_batch_begin(self, batch, logs=None):
        # steps dispatched so far in this epoch: `batch`; the next call runs `steps_per_execution`
        upcoming = self._epoch_start + batch + int(getattr(self.model, "steps_per_execution", 1) or 1)
        if self.diverged_at is None and upcoming - self._read_to > self.model.diag_block_steps:
            self._read()

    def on_epoch_end(self, epoch, logs=None):
        self._read()

    def on_train_end(self, logs=None):
        self._read()
        if not self.rows:  # no step taken (train.epochs=0): the signal at initialisation only
            self.summary = verdicts.signal_evidence(self.signal)
            return
        self._probe("end")
        keys = [s.key for s in self.model.diag_stats]
        table = np.vstack(self.rows)
        self.summary = verdicts.step_evidence(table, keys, diag.ratio_keys(self.model), self.steps_per_epoch)
        self.summary |= verdicts.signal_evidence(self.signal)
        nonfinite_step = self.model.diag_first_nonfinite_step()
        if nonfinite_step >= 0:
            self.summary[verdicts.FIRST_NONFINITE] = nonfinite_step

    def table(self) -> pd.DataFrame:
        """Long table: step, epoch, layer, layer_index, stat, value (one row per step × statistic)."""
        stats = self.model.diag_stats
        values = np.vstack(self.rows) if self.rows else np.zeros((0, len(stats)))
        steps = np.repeat(np.arange(len(values)), len(stats))
        # activation statistics only at the steps the schedule computed them (every step for the rest)
        every_step = np.array([s.group not in (contract.ACT, contract.BACKPROP) for s in stats])
        keep = np.tile(every_step, len(values)) | np.repeat(
            self.model.diag_activation_steps(np.arange(len(values))), len(stats)
        )
        return pd.DataFrame(
            {
                "step": steps.astype("int64"),
                "epoch": (steps // self.steps_per_epoch).astype("int64"),
                "group": np.tile([s.group for s in stats], len(values)),
                "layer": np.tile([s.layer for s in stats], len(values)),
                "layer_index": np.tile([s.layer_index for s in stats], len(values)).astype("int64"),
                "stat": np.tile([s.stat for s in stats], len(values)),
                "value": values.reshape(-1).astype("float64"),
            }
        )[keep].reset_index(drop=True)

    def signal_table(self) -> pd.DataFrame:
        """phase (init / end), layer, layer_index, stat, value: the signal probe, long format."""
        cols = ["phase", "layer", "layer_index", "stat", "value"]
        if not self.signal:
            return pd.DataFrame(columns=cols)
        return pd.DataFrame(self.signal).melt(["phase", "layer", "layer_index"], var_name="stat").dropna()[cols]


class HistogramLogger(keras.callbacks.Callback):
    """Histograms of activations, back-propagated and weight gradients per layer on a fixed probe
    batch, at step 0 (initialisation) and at the end of the given epochs (1-based)."""

    def __init__(self, x_probe, y_probe, epochs: set[int], steps_per_epoch: int):
        super().__init__()
        self.x, self.y, self.epochs, self.steps_per_epoch = x_probe, y_probe, epochs, steps_per_epoch
        self.rows: list[dict] = []

    def _record(self, epoch: int) -> None:
        step = epoch * self.steps_per_epoch
        for row in diag.histograms(diag.probe_tensors(self.model, self.x, self.y)):
            self.rows.append({"step": step, "epoch": epoch, **row})

    def on_train_begin(self, logs=None):
        self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs or (self.model.stop_training and self.rows[-1]["epoch"] != epoch + 1):
            self._record(epoch + 1)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


class CurvatureLogger(keras.callbacks.Callback):
    """The Hessian's top eigenvalue(s) (and trace) of the training loss on a fixed set of training
    examples, at step 0, every `every` train steps and after the last step: `curv/lambda_max`,
    `curv/lambda_min`, `curv/lambda_<i>`, `curv/trace`, `curv/trace_se`, `curv/hvps`,
    `curv/seconds` and, where the optimizer has one (sgd 2/η, momentum (2 + 2β)/η),
    `curv/two_over_lr` (step = the train steps taken before the measurement). Measured at the start
    of a batch, on the weights the next step starts from."""

    def __init__(
        self,
        run: tracking.RunLogger,
        every: int,
        x,
        y,
        *,
        iterations: int,
        top_k: int,
        trace_samples: int,
        steps_per_epoch: int,
        seed: int = 0,
        optimizer_name: str = "",
        momentum: float | None = None,
    ):
        super().__init__()
        self.run, self.every, self.x, self.y = run, max(1, int(every)), x, y
        self.iterations, self.top_k, self.trace_samples = int(iterations), int(top_k), int(trace_samples)
        self.steps_per_epoch, self.seed = steps_per_epoch, int(seed)
        self.optimizer_name, self.momentum = optimizer_name, momentum
        self.rows: list[dict] = []
        self._hvp, self._epoch, self._last = None, 0, -1

    def _measure(self, step: int) -> None:
        if step == self._last:
            return
        if self._hvp is None:
            self._hvp = curvature.HessianVectorProduct(self.model, self.x, self.y)
        t = time.perf_counter()
        values = curvature.measure(self._hvp, self.iterations, self.top_k, self.trace_samples, self.seed + step)
        values["seconds"] = time.perf_counter() - t
        opt = self.model.optimizer
        threshold = curvature.two_over_lr(
            self.optimizer_name, float(keras.ops.convert_to_numpy(opt.learning_rate)), self.momentum
        )
        if threshold is not None:
            values["two_over_lr"] = threshold
        metrics = {f"curv/{k}": float(v) for k, v in values.items()}
        self.run.metrics(metrics, step=step)
        self.rows += [{"step": step, "stat": k.removeprefix("curv/"), "value": v} for k, v in metrics.items()]
        self._last = step

    def on_train_begin(self, logs=None):
        self._measure(0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch * self.steps_per_epoch + batch
        if step % self.every == 0:
            self._measure(step)

    def on_train_end(self, logs=None):
        self._measure(int(self.model.optimizer.iterations.numpy()))

    def table(self) -> pd.DataFrame:
        """step, stat, value: every measurement (also in MLflow as `curv/<stat>`)."""
        return pd.DataFrame(self.rows, columns=["step", "stat", "value"])


@dataclass
class Recorders:
    """The cell's callbacks, in the order Keras calls them (`all`), and each recorder by role: the
    per-epoch logger always, the others by diagnostics level and config (None when off)."""

    epochs: EpochLogger
    guard: DivergenceGuard | None = None
    diagnostics: DiagnosticsLogger | None = None
    histograms: HistogramLogger | None = None
    curvature: CurvatureLogger | None = None
    all: list = field(default_factory=list)

    def diverged_at(self) -> int | None:
        return (self.guard or self.diagnostics).diverged_at

    def tables(self) -> dict:
        """The cell's tables by contract name (contract.TABLES), for the recorders it had."""
        tables = {contract.EPOCHS: self.epochs.table()}
        if self.diagnostics is not None:
            tables |= {contract.DIAGNOSTICS: self.diagnostics.table(), contract.SIGNAL: self.diagnostics.signal_table()}
        if self.histograms is not None:
            tables[contract.HISTOGRAMS] = self.histograms.table()
        if self.curvature is not None:
            tables[contract.CURVATURE] = self.curvature.table()
        return tables


def recorders(cfg, p: CellPlan, run, splits) -> Recorders:
    """Every callback of a cell, assembled in one place: diagnostics first (it reads the train step's
    statistics before the others see the epoch end), then the divergence guard of Keras's own train
    step (diagnostics off), the epoch logger, histograms, curvature, the user's `train.callbacks`,
    and last the step timer (`train.time_steps`)."""
    dc, spe = p.diagnostics, p.steps_per_epoch
    timer = StepTimer() if cfg.train.get("time_steps", False) else None
    r = Recorders(EpochLogger(run, timer))
    if dc.level == "off":  # else the train step stops itself
        r.guard = DivergenceGuard()
    else:
        r.diagnostics = DiagnosticsLogger(run, dc.log_every(spe * p.epochs), spe, splits.x_probe, splits.y_probe)
    if dc.level == "full":
        at = set(dc.histogram_epochs) if dc.histogram_epochs is not None else {p.epochs}
        r.histograms = HistogramLogger(splits.x_probe, splits.y_probe, at, spe)
    cc = dc.curvature
    if cc.every_n_steps > 0:
        r.curvature = CurvatureLogger(
            run,
            cc.every_n_steps,
            splits.x_train[: cc.examples],
            splits.y_train[: cc.examples],
            iterations=cc.iterations,
            top_k=cc.top_k,
            trace_samples=cc.trace_samples,
            steps_per_epoch=spe,
            seed=p.seed,
            optimizer_name=p.optimizer.name,
            momentum=p.optimizer.params.get("momentum"),
        )
    own = [r.diagnostics, r.guard, r.epochs, r.histograms, r.curvature]
    r.all = [cb for cb in own if cb is not None]
    import hydra.utils  # the user's `train.callbacks`, each {_target_: module.Class, ...}

    r.all += [hydra.utils.instantiate(cb) for cb in (cfg.train.callbacks or [])]
    r.all += [timer] if timer is not None else []
    return r
