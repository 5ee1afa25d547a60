"""Vanishing / exploding gradient diagnostics: per-layer statistics and the train step computing them.

The statistics are defined in `study.measures`, one table per family; `layout` names them for a
model, `batch_statistics` computes them for a model and a batch, and `DiagnosticModel.train_step`
calls the same functions in graph at every step and writes them into a block of rows on the device
that a Keras callback reads a block at a time (no host synchronisation per step).

Levels: `off` (Keras's own train step), `default` (weight-gradient and weight statistics per weight
layer, global gradient norm, non-finite count), `full` (adds, per activation output h_l, the
back-propagated gradient norm ||dL/dh_l||, mean, std, saturation or zero / dead fractions).
Weight statistics use each layer's kernel W_l (not its bias).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from study import contract
from study.measures import (  # noqa: F401  (the statistics' tables; diag.<name> for their users)
    ACT_BINS,
    ACTIVATION_STATS,
    BIAS_GRAD_STATS,
    EVERY,
    KERNEL_STATS,
    LOG_GRAD_BINS,
    MODEL_STATS,
    SIGNAL_STATS,
    WEIGHT_GRAD_STATS,
    activation_stat_names,
    activation_stats,
    dead_fraction,
    histograms,
    inactive,
    spread,
    weight_grad_stats,
)

LEVELS = ("off", "default", "full")
BLOCK_STEPS = 256  # statistics rows kept on the device between two reads by the host


@dataclass(frozen=True)
class Stat:
    """One entry of the statistics vector; `key` is its MLflow metric name."""

    key: str
    group: str  # grad | weight | backprop | act | global
    layer: str
    layer_index: int
    stat: str


def weight_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Conv and dense layers in network order (the ones diagnostics follow)."""
    return [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]


def activation_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [l for l in model.layers if l.name.startswith("act_")]


def _layer_stat(group: str, layer: str, index: int, stat: str) -> Stat:
    return Stat(contract.layer_metric(group, layer, stat), group, layer, index, stat)


def layout(model: keras.Model, level: str, activation: str) -> list[Stat]:
    """The ordered list of statistics the train step computes at `level`."""
    stats = [Stat(key, "global", "", 0, key.rsplit("/", 1)[-1]) for key in MODEL_STATS]
    for i, layer in enumerate(weight_layers(model), start=1):
        stats += [_layer_stat(contract.GRAD, layer.name, i, s) for s in WEIGHT_GRAD_STATS]
        if layer.use_bias:
            stats += [_layer_stat(contract.GRAD, layer.name, i, s) for s in BIAS_GRAD_STATS]
        stats += [_layer_stat(contract.WEIGHT, layer.name, i, s) for s in KERNEL_STATS]
    # an optimizer's own per-step record (optimizer=newton: damping, CG iterations, ...)
    stats += [Stat(f"{name}", "optimizer", "", 0, name.split("/")[-1]) for name in optimizer_stats(model)]
    if level == "full":
        for i, layer in enumerate(activation_layers(model), start=1):
            name = layer.name.removeprefix("act_")
            stats.append(_layer_stat(contract.BACKPROP, name, i, "l2"))
            stats += [_layer_stat(contract.ACT, name, i, s) for s in activation_stat_names(activation)]
    return stats


def optimizer_stats(model: keras.Model) -> tuple[str, ...]:
    """Metric names of the optimizer's own per-step values (`diag_values()`), e.g. `newton/damping`."""
    return tuple(getattr(model.optimizer, "diag_stat_names", ()) or ())


def _compute(model, x, y, acts_on: bool, training: bool):
    """Forward + backward in one tape; returns loss, y_pred, grads of the trainable weights,
    grads of the activation outputs h_l, the h_l, and the factor that undoes loss scaling."""
    with tf.GradientTape() as tape:
        outs = model._diag_probe(x, training=training) if acts_on else model(x, training=training)
        acts, y_pred = (outs[:-1], outs[-1]) if acts_on else ([], outs)
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, training=training)
        scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
    grads = tape.gradient(scaled, list(model.trainable_weights) + list(acts))
    n = len(model.trainable_weights)
    return loss, y_pred, grads[:n], grads[n:], acts, _loss_scale_inverse(model)


def _loss_scale_inverse(model):
    """The factor that undoes loss scaling: the number 1.0 without a LossScaleOptimizer."""
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        opt = model.optimizer  # scale_loss uses the initial scale until the optimizer is built
        return 1.0 / tf.cast(opt.dynamic_scale if opt.built else opt.initial_scale, tf.float32)
    return 1.0


def _tuple_with(out, inv):
    """(loss, y_pred, grads, act_vec) -> (loss, y_pred, grads, inv, act_vec)."""
    loss, y_pred, grads, act_vec = out
    return loss, y_pred, list(grads), inv, act_vec


def _unscale(t: tf.Tensor, inv) -> tf.Tensor:
    """t * inv (undoing loss scaling); without loss scaling (inv the number 1.0) t itself, the same
    values without a pass over t."""
    return t if isinstance(inv, float) and inv == 1.0 else t * inv


class DiagnosticModel(keras.Model):
    """A functional Keras model whose train step also computes the diagnostic statistics."""

    def enable_diagnostics(
        self,
        level: str,
        activation: str,
        small_grad_threshold: float = 1e-8,
        activation_params: dict | None = None,
        block_steps: int = BLOCK_STEPS,
        activation_every: int = 1,
        last_step: int = -1,
    ):
        """`activation_every`, `last_step`: the full level's activation statistics (back-propagated
        norms, mean, std, spread, saturation, zero and dead fractions) are computed at step 0, every
        `activation_every` steps and from `last_step` on; at other steps they are NaN (and left out
        of the step table) and the train step runs the plain model's forward pass. 1: every step."""
        if level not in LEVELS:
            from study.errors import unknown

            raise unknown("diagnostics level", level, LEVELS)
        self._diag_level = level
        self._diag_activation = activation
        self._diag_act_params = dict(activation_params or {})
        self._diag_threshold = small_grad_threshold
        if level == "off":
            return
        self._diag_layers = weight_layers(self)
        act_outputs = [l.output for l in activation_layers(self)]
        self._diag_acts_on = level == "full" and bool(act_outputs)
        # the same layers, also returning every activation output h_l (full level's train step; the
        # forward-signal probe at every level)
        self._diag_probe = keras.Model(self.inputs, act_outputs + list(self.outputs))
        self.diag_stats = layout(self, level, activation)
        self.diag_block_steps = int(block_steps)
        holder = type("DiagVariables", (), {})()  # a plain object: Keras does not track these
        holder.latest = tf.Variable(tf.zeros(len(self.diag_stats)), trainable=False)
        # one row per step, written at row step % block_steps; the host reads a block at a time
        holder.rows = tf.Variable(tf.zeros((self.diag_block_steps, len(self.diag_stats))), trainable=False)
        holder.steps = tf.Variable(0, dtype=tf.int64, trainable=False)  # train steps taken
        holder.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        holder.diverged_step = tf.Variable(-1, dtype=tf.int64, trainable=False)  # first non-finite loss
        holder.act_last = tf.Variable(int(last_step), dtype=tf.int64, trainable=False)
        self._diag_act_every = max(1, int(activation_every))  # a constant of the traced step
        object.__setattr__(self, "_diag_vars", holder)

    @property
    def diag_level(self) -> str:
        return getattr(self, "_diag_level", "off")

    def diag_index(self, key: str) -> int:
        """Position of statistic `key` in the statistics vector."""
        return [s.key for s in self.diag_stats].index(key)

    def diag_latest(self):
        """The statistics vector of the last train step (a tf.Variable, in `diag_stats` order)."""
        return self._diag_vars.latest

    def diag_first_nonfinite_step(self) -> int:
        """The first step with a non-finite loss or gradient entry, or -1."""
        return int(self._diag_vars.first_nonfinite_step.numpy())

    def diag_diverged_step(self) -> int:
        """The step whose loss was non-finite, or -1. Every later train step is a no-op (no update,
        no metric update, no statistics row), so training stopped there, whenever the host notices."""
        return int(self._diag_vars.diverged_step.numpy())

    def diag_steps(self) -> int:
        """Train steps taken so far (rows of statistics written)."""
        return int(self._diag_vars.steps.numpy())

    def diag_read(self, start: int) -> np.ndarray:
        """The statistics rows of steps `start` ... `diag_steps() - 1` (one host synchronisation).
        Raises if more than `diag_block_steps` steps were taken since `start` (rows overwritten)."""
        v = self._diag_vars
        rows, end = v.rows.numpy(), int(v.steps.numpy())
        if end - start > self.diag_block_steps:
            raise RuntimeError(
                f"statistics of steps {start}..{end - 1} requested, but only the last {self.diag_block_steps} are kept"
            )
        return rows[np.arange(start, end) % self.diag_block_steps]

    def diag_activation_steps(self, steps: np.ndarray) -> np.ndarray:
        """Which of `steps` carry the activation statistics (the schedule of `enable_diagnostics`)."""
        steps = np.asarray(steps)
        if not getattr(self, "_diag_acts_on", False):
            return np.zeros(steps.shape, bool)
        last = int(self._diag_vars.act_last.numpy())
        return (steps % self._diag_act_every == 0) | ((last >= 0) & (steps >= last))

    def _act_vector(self, grads_h, acts, inv) -> tf.Tensor:
        """The activation part of the statistics vector: per activation output, the back-propagated
        norm and the activation's statistics."""
        names = activation_stat_names(self._diag_activation)
        values = []
        for h, gh in zip(acts, grads_h):
            values.append(tf.norm(_unscale(tf.cast(gh, tf.float32), inv)))
            st = activation_stats(h, self._diag_activation, self._diag_act_params)
            values += [st[n] for n in names]
        return tf.stack(values) if values else tf.zeros((0,))

    def diag_vector(self, grads, grads_h, acts, inv, before, act_vec=None) -> tf.Tensor:
        """The statistics vector in `layout` order (`before`: kernels before the update; `act_vec`:
        the activation part when computed already)."""
        grads = [None if g is None else _unscale(tf.cast(g, tf.float32), inv) for g in grads]
        finite = [g for g in grads if g is not None]
        values = [fn(finite) for fn in MODEL_STATS.values()]
        by_var = {id(v): g for v, g in zip(self.trainable_weights, grads)}
        for layer, w_before in zip(self._diag_layers, before):
            values += weight_grad_stats(by_var[id(layer.kernel)], self._diag_threshold)
            if layer.use_bias:
                values += [fn(by_var[id(layer.bias)]) for fn in BIAS_GRAD_STATS.values()]
            w, after = tf.cast(w_before, tf.float32), tf.cast(layer.kernel.value, tf.float32)
            norm = tf.norm(w)
            values += [fn(w, after, norm) for fn in KERNEL_STATS.values()]
        if optimizer_stats(self):
            values += tf.unstack(self.optimizer.diag_values())
        act = self._act_vector(grads_h, acts, inv) if act_vec is None else act_vec
        return tf.concat([tf.stack(values), act], axis=0)

    def _apply(self, x, y, grads, loss):
        """The update: the optimizer's own batch step where it needs the loss itself (Newton), else
        Keras's apply_gradients."""
        if hasattr(self.optimizer, "minimize_batch"):
            self.optimizer.minimize_batch(self, x, y, grads, loss)
        else:
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))

    def train_step(self, data):
        if self.diag_level == "off" and hasattr(self.optimizer, "minimize_batch"):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            loss, y_pred, grads, _, _, _ = _compute(self, x, y, False, training=True)
            self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            self._apply(x, y, grads, loss)
            return self.compute_metrics(x, y, y_pred, sample_weight=None)
        if self.diag_level == "off":
            return super().train_step(data)
        # after a non-finite loss every step is a no-op: the host reads the statistics a block at a
        # time (no synchronisation per step), so it stops training a few steps later, and those
        # steps must change nothing
        return tf.cond(self._diag_vars.diverged_step < 0, lambda: self._diag_train_step(data), self.get_metrics_result)

    def _forward_backward(self, x, y):
        """loss, y_pred, weight gradients, the factor undoing loss scaling and the activation part
        of the statistics vector: computed with the activation outputs at the scheduled steps, else
        by the plain model (the activation part NaN). The weight gradients are the same either way."""
        v = self._diag_vars
        n_act = len([s for s in self.diag_stats if s.group in (contract.ACT, contract.BACKPROP)])
        inv = _loss_scale_inverse(self)

        def with_acts():
            loss, y_pred, grads, grads_h, acts, _ = _compute(self, x, y, True, training=True)
            return loss, y_pred, grads, self._act_vector(grads_h, acts, inv)

        def without():
            loss, y_pred, grads, _, _, _ = _compute(self, x, y, False, training=True)
            return loss, y_pred, grads, tf.fill((n_act,), float("nan"))

        if not self._diag_acts_on:
            loss, y_pred, grads, _ = without()
            return loss, y_pred, grads, inv, tf.zeros((0,))
        if self._diag_act_every <= 1:  # every step: no branch to trace
            return _tuple_with(with_acts(), inv)
        step = v.steps.value()
        scheduled = tf.equal(step % self._diag_act_every, 0) | ((v.act_last >= 0) & (step >= v.act_last))
        return _tuple_with(tf.cond(scheduled, with_acts, without), inv)

    def _diag_train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        kernels = [l.kernel for l in self._diag_layers]
        loss, y_pred, grads, inv, act_vec = self._forward_backward(x, y)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        before = [tf.identity(k.value) for k in kernels]
        self._apply(x, y, grads, loss)
        vec = self.diag_vector(grads, None, None, inv, before, act_vec=act_vec)
        v = self._diag_vars
        step = v.steps.value()
        v.latest.assign(vec)
        v.rows[step % self.diag_block_steps].assign(vec)
        bad_loss = ~tf.math.is_finite(loss)
        bad = (v.first_nonfinite_step < 0) & ((vec[self.diag_index(contract.NONFINITE_GRADS)] > 0) | bad_loss)
        v.first_nonfinite_step.assign(tf.where(bad, step, v.first_nonfinite_step))
        v.diverged_step.assign(tf.where((v.diverged_step < 0) & bad_loss, step, v.diverged_step))
        v.steps.assign_add(1)
        return self.compute_metrics(x, y, y_pred, sample_weight=None)


def batch_statistics(model: DiagnosticModel, x, y) -> dict[str, float]:
    """The train step's statistics for one batch, without updating the model (update ratio 0).

    Uses training-mode forward passes (as the train step does) but applies no update; for use in
    tests, at initialisation and by other tools."""
    kernels = [l.kernel for l in model._diag_layers]
    _, _, grads, grads_h, acts, inv = _compute(
        model, tf.convert_to_tensor(x), tf.convert_to_tensor(y), model._diag_acts_on, training=True
    )
    before = [k.value for k in kernels]
    vec = model.diag_vector(grads, grads_h, acts, inv, before).numpy()
    return {s.key: float(v) for s, v in zip(model.diag_stats, vec)}


def _mode_dependent(model: keras.Model) -> bool:
    """Whether the forward pass differs between training and inference (batch norm, dropout)."""
    return any(isinstance(l, (keras.layers.BatchNormalization, keras.layers.Dropout)) for l in model.layers)


def _probe_pass(model: DiagnosticModel, x, y, training: bool):
    """`_compute` on the probe batch with every activation output. The signal probe (training mode)
    and the histograms (inference mode) both look at the probe batch at initialisation and after
    training; when the two modes compute the same thing (no batch norm, no dropout) and the weights
    have not changed (same optimizer step), the second asks for the first's tensors, not a new pass."""
    step = int(model.optimizer.iterations.numpy()) if model.optimizer is not None and model.optimizer.built else -1
    key = (id(x), id(y), step, training if _mode_dependent(model) else None)
    cached = getattr(model, "_diag_probe_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    out = _compute(model, tf.convert_to_tensor(x), tf.convert_to_tensor(y), True, training=training)
    object.__setattr__(model, "_diag_probe_cache", (key, out))  # one entry: the latest pass
    return out


def signal_profile(model: DiagnosticModel, x, y) -> list[dict]:
    """Forward and backward signal through depth on a probe batch, without changing the model: per
    activation output h_l, its `spread` (per unit across examples, see `spread`), its RMS, the RMS of
    dL/dh_l (size-normalised back-propagated gradient) and, where units can die, the dead-channel
    fraction. Training-mode forward (batch norm uses batch statistics, as in the train step); batch
    norm's moving statistics and the layers' random-seed states are restored afterwards, so the
    training that follows is unchanged."""
    saved = [v.value for v in model.non_trainable_variables]
    _, _, _, grads_h, acts, inv = _probe_pass(model, x, y, training=True)
    for v, value in zip(model.non_trainable_variables, saved):
        v.assign(value)
    rows = []
    names = [l.name.removeprefix("act_") for l in activation_layers(model)]
    act, params = model._diag_activation, model._diag_act_params or {}
    stats = [(n, fn) for n, (family, fn) in SIGNAL_STATS.items() if family is EVERY or act in family]
    for i, (name, h, gh) in enumerate(zip(names, acts, grads_h), start=1):
        h, gh = tf.cast(h, tf.float32), tf.cast(gh, tf.float32)
        rows.append({"layer": name, "layer_index": i, **{n: fn(h, gh, float(inv), act, params) for n, fn in stats}})
    return rows


def ratio_keys(model: DiagnosticModel) -> tuple[str, str]:
    """The statistics whose ratio is the vanishing / exploding signature: the size-normalised
    gradient norm ||dL/dW_l|| / sqrt(#entries of W_l) (the RMS) of the first hidden weight layer
    and of the last one (logits excluded). Normalising by size matters: the first conv kernel has
    one input channel, the last up to 32, so raw norms differ by ~10× with no vanishing at all."""
    hidden = [l.name for l in model._diag_layers if l.name != "logits"]
    return contract.layer_metric(contract.GRAD, hidden[0], "rms"), contract.layer_metric(
        contract.GRAD, hidden[-1], "rms"
    )


def first_last_ratio(values: dict[str, float], model: DiagnosticModel) -> float:
    """First over last hidden layer's RMS weight gradient (see `ratio_keys`)."""
    first, last = (values[k] for k in ratio_keys(model))
    return float(np.float64(first) / np.float64(last)) if last > 0 else float("inf")


def probe_tensors(model: DiagnosticModel, x, y) -> dict[str, list[tuple[str, int, np.ndarray]]]:
    """Activation outputs h_l, back-propagated gradients dL/dh_l and weight gradients dL/dW_l on a
    probe batch, in inference mode (no dropout, no batch-norm update), without updating the model."""
    _, _, grads, grads_h, acts, inv = _probe_pass(model, x, y, training=False)
    by_var = {id(v): g for v, g in zip(model.trainable_weights, grads)}
    names = [l.name.removeprefix("act_") for l in activation_layers(model)]
    return {
        "activation": [(n, i, np.asarray(h, np.float64)) for i, (n, h) in enumerate(zip(names, acts), 1)],
        "backprop": [(n, i, np.asarray(g, np.float64) * float(inv)) for i, (n, g) in enumerate(zip(names, grads_h), 1)],
        "weight_grad": [
            (l.name, i, np.asarray(by_var[id(l.kernel)], np.float64) * float(inv))
            for i, l in enumerate(model._diag_layers, 1)
        ],
    }
