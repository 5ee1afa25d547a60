"""The statistics, one table per family (name -> definition), and the functions behind them: of the
weight gradients, bias gradients and kernels per weight layer, of the model (global gradient norm,
non-finite entries), of each activation output (with the activations each applies to) and of the
signal probe, plus the shared histogram bins. `study.diagnostics` lays them out and computes them in
the train step; tests/test_diagnostics.py holds an independent oracle for every entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from study import contract
from study.activations import BOUNDED, RELU_FAMILY

SATURATION_MARGIN = 0.01  # "within 1% of the bound": sigmoid < 0.01 or > 0.99; tanh |h| > 0.99


def _rms(g: tf.Tensor) -> tf.Tensor:
    return tf.norm(g) / tf.sqrt(tf.cast(tf.size(g), tf.float32))


# One definition per statistic: name -> function. The layout (names, order) and the train step
# (values) both iterate over these tables, so they cannot drift apart.
WEIGHT_GRAD_STATS = {  # of the weight gradient g = dL/dW_l (kernel); threshold: small_grad_threshold
    "l2": lambda g, threshold: tf.norm(g),
    "rms": lambda g, threshold: _rms(g),
    "max": lambda g, threshold: tf.reduce_max(tf.abs(g)),
    "small_frac": lambda g, threshold: tf.reduce_mean(tf.cast(tf.abs(g) < threshold, tf.float32)),
}
WEIGHT_STATS = tuple(WEIGHT_GRAD_STATS)
BIAS_GRAD_STATS = {"bias_rms": lambda g: _rms(g)}  # of dL/db_l: biases still move when the signal is gone
KERNEL_STATS = {  # of the kernel W_l before the update (w, its norm) and after it (after)
    "l2": lambda w, after, norm: norm,
    "update_ratio": lambda w, after, norm: tf.math.divide_no_nan(tf.norm(after - w), norm),  # ||ΔW|| / ||W||
}
MODEL_STATS = {  # model-wide, of the (unscaled) gradients of every trainable weight
    contract.GLOBAL_NORM: lambda grads: tf.linalg.global_norm(grads),
    contract.NONFINITE_GRADS: lambda grads: tf.cast(
        tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32)) for g in grads]), tf.float32
    ),
}


def weight_grad_stats(g: tf.Tensor, threshold: float) -> list[tf.Tensor]:
    """[||g||_2, RMS(g), max|g|, fraction of entries with |g| < threshold]."""
    g = tf.cast(g, tf.float32)
    return [fn(g, threshold) for fn in WEIGHT_GRAD_STATS.values()]


def _mean_std(h: tf.Tensor, axis=None) -> tuple[tf.Tensor, tf.Tensor]:
    """`tf.reduce_mean(h, axis, keepdims=True)` and `tf.math.reduce_std(h, axis)`, bit for bit (the
    same mean, the same squared deviations, the same reductions), in two passes over h fewer: the
    mean is computed once for both, and the deviation is squared in the same pass that takes it.
    The activation statistics make several passes over every activation output at every step."""
    m = tf.reduce_mean(h, axis=axis, keepdims=True)
    return m, tf.sqrt(tf.reduce_mean(tf.math.squared_difference(h, m), axis=axis))


def spread(h: tf.Tensor) -> tf.Tensor:
    """Mean over units (every position and channel) of each unit's standard deviation across the
    examples of the batch: 0 when the layer's output no longer depends on the input."""
    return tf.reduce_mean(_mean_std(tf.cast(h, tf.float32), axis=0)[1])


# activation -> (its params -> the output at or below which a unit passes (almost) no gradient)
DEAD_BELOW = {
    "relu": lambda p: 0.0,
    "elu": lambda p: -0.99 * float(p.get("alpha", 1.0)),
    "selu": lambda p: -0.99 * 1.0507009873554805 * 1.6732632423543772,
}


def inactive(h: tf.Tensor, activation: str, params: dict | None = None) -> tf.Tensor | None:
    """Where a ReLU-family unit passes (almost) no gradient: its derivative is below 1 % of the
    positive side's. relu h <= 0; elu h <= -0.99 alpha; selu h <= -0.99 scale alpha; leaky_relu,
    gelu and swish never stop passing gradient this way (None)."""
    floor = DEAD_BELOW.get(activation)
    return None if floor is None else h <= floor(params or {})


@dataclass
class _Output:
    """One activation output h (float32) and what several of its statistics share."""

    h: tf.Tensor
    activation: str
    params: dict
    mean: tf.Tensor
    std: tf.Tensor

    @classmethod
    def of(cls, h, activation: str, params: dict | None) -> _Output:
        h = tf.cast(h, tf.float32)
        mean, std = _mean_std(h)
        return cls(h, activation, params or {}, mean, std)


def _saturation(a: _Output) -> tf.Tensor:
    lo, hi = BOUNDED[a.activation]
    margin = SATURATION_MARGIN * (hi - lo) / (2.0 if lo < 0 else 1.0)
    return tf.reduce_mean(tf.cast((a.h <= lo + margin) | (a.h >= hi - margin), tf.float32))


EVERY = None  # a statistic of every activation
# name -> (the activations it applies to, its value): the one definition of each activation
# statistic (`full`), in the order they are recorded; families from study/activations.py
ACTIVATION_STATS = {
    "mean": (EVERY, lambda a: tf.reshape(a.mean, [])),  # pooled over examples, positions and channels
    "std": (EVERY, lambda a: a.std),
    "spread": (EVERY, lambda a: spread(a.h)),  # per unit across examples
    "saturation": (BOUNDED, _saturation),  # within SATURATION_MARGIN of a bound
    "zero_frac": (RELU_FAMILY, lambda a: tf.reduce_mean(tf.cast(a.h <= 0.0, tf.float32))),
    "dead_frac": (DEAD_BELOW, lambda a: dead_fraction(inactive(a.h, a.activation, a.params))),  # can die
}


def activation_stat_names(activation: str) -> tuple[str, ...]:
    """The activation statistics recorded for this activation, in order."""
    return tuple(n for n, (family, _) in ACTIVATION_STATS.items() if family is EVERY or activation in family)


def activation_stats(h: tf.Tensor, activation: str, params: dict | None = None) -> dict[str, tf.Tensor]:
    """Mean and std of h (pooled over examples, positions and channels); `spread` (per unit across
    examples); saturation fraction for bounded activations; for the ReLU family the fraction of
    entries <= 0 and, where a unit can die, of dead channels (inactive for every example and position)."""
    a = _Output.of(h, activation, params)
    return {n: ACTIVATION_STATS[n][1](a) for n in activation_stat_names(activation)}


def dead_fraction(off: tf.Tensor) -> tf.Tensor:
    """Fraction of channels (last axis) inactive at every example and position."""
    per_channel = tf.reduce_all(tf.reshape(off, [-1, tf.shape(off)[-1]]), axis=0)
    return tf.reduce_mean(tf.cast(per_channel, tf.float32))


# the signal probe's statistics per activation output h_l and its back-propagated gradient gh = dL/dh_l
# (`inv` undoes loss scaling): name -> (the activations it applies to, its value), in the order of
# the probe's rows
SIGNAL_STATS = {
    "spread": (EVERY, lambda h, gh, inv, act, p: float(spread(h))),
    "rms": (EVERY, lambda h, gh, inv, act, p: float(_rms(h))),
    "backprop_rms": (EVERY, lambda h, gh, inv, act, p: float(_rms(gh)) * inv),  # size-normalised ||dL/dh_l||
    "dead_frac": (DEAD_BELOW, lambda h, gh, inv, act, p: float(dead_fraction(inactive(h, act, p)))),
}


# Histogram bins, shared by every cell so histograms compare across cells: activations on a linear
# scale, gradients as log10 |g| (zeros counted in their own bin, with bin_left = bin_right = -inf).
ACT_BINS = np.linspace(-4.0, 4.0, 161)
LOG_GRAD_BINS = np.linspace(-30.0, 2.0, 321)


def histograms(tensors: dict[str, list[tuple[str, int, np.ndarray]]]) -> list[dict]:
    """Rows (quantity, layer, layer_index, bin_left, bin_right, count) on the shared bins."""
    rows = []
    for quantity, items in tensors.items():
        for layer, index, t in items:
            t = t[np.isfinite(t)].ravel()
            if quantity == "activation":
                edges, values = ACT_BINS, np.clip(t, ACT_BINS[0], ACT_BINS[-1])
            else:
                nz = t[t != 0]
                rows.append(
                    dict(
                        quantity=quantity,
                        layer=layer,
                        layer_index=index,
                        bin_left=-np.inf,
                        bin_right=-np.inf,
                        count=int(t.size - nz.size),
                    )
                )
                edges, values = LOG_GRAD_BINS, np.clip(np.log10(np.abs(nz)), LOG_GRAD_BINS[0], LOG_GRAD_BINS[-1])
            counts, _ = np.histogram(values, bins=edges)
            rows += [
                dict(
                    quantity=quantity,
                    layer=layer,
                    layer_index=index,
                    bin_left=float(lo),
                    bin_right=float(hi),
                    count=int(c),
                )
                for lo, hi, c in zip(edges[:-1], edges[1:], counts)
            ]
    return rows
