"""Diagnostic statistics against independent computations, known answers and known results."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from study import activations, data, models
from study import diagnostics as diag
from study.verdicts import signal_evidence as signal_summary


def _model(
    activation="tanh",
    depth=3,
    width=4,
    init="glorot_uniform",
    shape=(10, 10, 1),
    level="full",
    optimizer=None,
    head_units=(),
    classes=3,
):
    keras.utils.set_random_seed(1)
    base = models.build(
        models.ModelSpec(depth=depth, width=width, activation=activation, init=init, head_units=list(head_units)),
        shape,
        classes,
    )
    m = diag.DiagnosticModel(base.inputs, base.outputs)
    m.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    m.enable_diagnostics(level, activation, small_grad_threshold=1e-3)
    return m


def _batch(shape=(10, 10, 1), n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), (np.arange(n) % 3).astype(np.int32)


def _tape(model, x, y):
    """Layer-by-layer forward pass with its own tape and the loss from tf.nn: the activation outputs by
    name, and the gradients of the trainable weights followed by those of the activation outputs."""
    acts = {}
    with tf.GradientTape() as tape:
        h = tf.convert_to_tensor(x)
        for layer in model.layers[1:]:
            h = layer(h)
            if layer.name.startswith("act_"):
                tape.watch(h)
                acts[layer.name.removeprefix("act_")] = h
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, h))
    return acts, tape.gradient(loss, list(model.trainable_weights) + list(acts.values()))


def _independent(model, x, y):
    """Layer-by-layer forward pass with its own tape, loss from tf.nn, statistics in numpy."""
    acts, grads = _tape(model, x, y)
    wg = dict(zip([id(v) for v in model.trainable_weights], grads))
    out = {
        "grad/global_norm": np.sqrt(
            sum(np.sum(np.square(g.numpy().astype(np.float64))) for g in grads[: len(model.trainable_weights)])
        )
    }
    for layer in diag.weight_layers(model):
        g = wg[id(layer.kernel)].numpy().astype(np.float64)
        w = layer.kernel.numpy().astype(np.float64)
        out |= {
            f"grad/{layer.name}/l2": np.linalg.norm(g),
            f"grad/{layer.name}/rms": np.sqrt(np.mean(g**2)),
            f"grad/{layer.name}/max": np.abs(g).max(),
            f"grad/{layer.name}/small_frac": np.mean(np.abs(g) < 1e-3),
            f"weight/{layer.name}/l2": np.linalg.norm(w),
        }
    for (name, h), gh in zip(acts.items(), grads[len(model.trainable_weights) :]):
        h = h.numpy().astype(np.float64)
        out |= {
            f"backprop/{name}/l2": np.linalg.norm(gh.numpy().astype(np.float64)),
            f"act/{name}/mean": h.mean(),
            f"act/{name}/std": h.std(),
        }
    return out


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_statistics_equal_an_independent_computation(activation):
    m = _model(activation, head_units=(5,))
    x, y = _batch()
    ours = diag.batch_statistics(m, x, y)
    ref = _independent(m, x, y)
    assert len(ref) >= 30
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-12), key
    assert ours["grad/nonfinite"] == 0


def test_update_ratio_is_the_relative_weight_change_of_the_step():
    m = _model("relu", level="default")
    x, y = _batch()
    before = {l.name: l.kernel.numpy().astype(np.float64) for l in diag.weight_layers(m)}
    m.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    latest = dict(zip([s.key for s in m.diag_stats], m._diag_vars.latest.numpy()))
    for l in diag.weight_layers(m):
        w0, w1 = before[l.name], l.kernel.numpy().astype(np.float64)
        assert latest[f"weight/{l.name}/update_ratio"] == pytest.approx(
            np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rel=1e-4
        )
        assert latest[f"weight/{l.name}/l2"] == pytest.approx(np.linalg.norm(w0), rel=1e-5)


def test_diagnostic_train_step_trains_exactly_like_keras_own():
    x, y = _batch(n=64)
    weights = {}
    for level in ("off", "default", "full"):
        m = _model("elu", level=level, optimizer=keras.optimizers.Adam(0.01))
        m.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        weights[level] = [w.numpy() for w in m.weights]
    for level in ("default", "full"):
        for a, b in zip(weights["off"], weights[level]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_statistics_are_unscaled_under_loss_scaling():
    x, y = _batch()
    plain = diag.batch_statistics(_model("tanh"), x, y)
    scaled = diag.batch_statistics(
        _model("tanh", optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=2.0**15)),
        x,
        y,
    )
    for key in plain:
        assert scaled[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-12), key


def test_saturation_on_constructed_inputs():
    st = diag.activation_stats(tf.constant([0.005, 0.5, 0.995, 0.3]), "sigmoid")
    assert float(st["saturation"]) == pytest.approx(0.5)
    st = diag.activation_stats(tf.constant([-0.995, 0.0, 0.5, 0.999]), "tanh")
    assert float(st["saturation"]) == pytest.approx(0.5)
    assert float(diag.activation_stats(tf.constant([-0.98, 0.98]), "softsign")["saturation"]) == 0.0


def test_zero_and_dead_unit_fractions_on_constructed_inputs():
    h = np.zeros((2, 1, 2, 3), np.float32)  # batch 2, 1×2 positions, 3 channels
    h[0, 0, 0, 1] = 1.0  # channel 1 fires once
    h[:, :, :, 2] = 2.0  # channel 2 always fires; channel 0 never: dead
    st = diag.activation_stats(tf.constant(h), "relu")
    assert float(st["dead_frac"]) == pytest.approx(1 / 3)
    assert float(st["zero_frac"]) == pytest.approx(7 / 12)
    assert float(st["mean"]) == pytest.approx(h.mean()) and float(st["std"]) == pytest.approx(h.std())


def test_known_result_sigmoid_vanishes_relu_he_does_not():
    s = data.load("synthetic", seed=0, options={"n_train": 128, "n_test": 8, "image_size": 28})
    x, y = s.x_train[:64], s.y_train[:64]
    ratios = {}
    for act, init in (("sigmoid", "glorot_uniform"), ("relu", "he_normal")):
        m = _model(act, depth=12, width=8, init=init, shape=(28, 28, 1), level="default", classes=s.num_classes)
        ratios[act] = diag.first_last_ratio(diag.batch_statistics(m, x, y), m)
    assert ratios["sigmoid"] < 1e-2, ratios
    assert 0.1 < ratios["relu"] < 10, ratios


def test_histograms_count_every_entry_on_shared_bins():
    m = _model("relu")
    x, y = _batch()
    tensors = diag.probe_tensors(m, x, y)
    table = pd.DataFrame(diag.histograms(tensors))
    for quantity, items in tensors.items():
        for layer, _, t in items:
            rows = table[(table.quantity == quantity) & (table.layer == layer)]
            assert rows["count"].sum() == t.size, (quantity, layer)
    edges = table[table.quantity == "backprop"].groupby("layer")["bin_left"].apply(tuple)
    assert edges.nunique() == 1  # every layer (and every cell) uses the same bins


def test_spread_is_zero_for_a_representation_that_ignores_the_input():
    same = tf.tile(tf.random.normal((1, 3, 3, 4)), (8, 1, 1, 1))  # every example the same, positions vary
    assert float(diag.spread(same)) < 1e-6 and float(tf.math.reduce_std(same)) > 0.5  # pooled std is fooled
    h = np.random.default_rng(0).normal(size=(64, 2, 2, 3)).astype(np.float32)
    assert float(diag.spread(tf.constant(h))) == pytest.approx(h.std(axis=0).mean(), rel=1e-5)


def test_dead_channels_per_activation_family():
    h = np.full((4, 2, 2, 2), 0.5, np.float32)
    h[..., 0] = -0.995  # elu (alpha 1) near its negative saturation: derivative < 1 % of the positive side's
    assert float(diag.activation_stats(tf.constant(h), "elu")["dead_frac"]) == 0.5
    h[..., 0] = -0.5  # still passes gradient
    assert float(diag.activation_stats(tf.constant(h), "elu")["dead_frac"]) == 0.0
    assert "dead_frac" not in diag.activation_stats(tf.constant(h), "leaky_relu")  # cannot die
    assert "dead_frac" not in diag.activation_stat_names("swish")


def test_signal_profile_leaves_the_model_unchanged_and_shows_collapse():
    x, y = _batch(n=32)
    m = _model("relu", depth=3, level="default")
    before = [v.numpy().copy() for v in m.variables]
    rows = diag.signal_profile(m, x, y)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, m.variables))
    assert [r["layer"] for r in rows] == ["conv_01", "conv_02", "conv_03"]
    acts = {}
    h = tf.convert_to_tensor(x)
    for layer in m.layers[1:]:
        h = layer(h)
        if layer.name.startswith("act_"):
            acts[layer.name] = h.numpy()
    for r in rows:  # independent: numpy std across examples, averaged over units
        assert r["spread"] == pytest.approx(acts["act_" + r["layer"]].std(axis=0).mean(), rel=1e-4)
    s = signal_summary([{"phase": "init", **r} for r in rows])
    assert s["diag/forward_ratio_init"] == pytest.approx(rows[-1]["spread"] / rows[0]["spread"])
    assert s["diag/backprop_ratio_init"] == pytest.approx(rows[0]["backprop_rms"] / rows[-1]["backprop_rms"])
    # a deep ReLU stack with tiny weights: the forward signal collapses
    deep = _model("relu", depth=12, init="small_normal", level="default")
    collapsed = signal_summary([{"phase": "init", **r} for r in diag.signal_profile(deep, x, y)])
    assert collapsed["diag/forward_ratio_init"] < 1e-6


def test_bias_gradients_are_recorded_per_layer():
    m = _model("tanh", level="default")
    x, y = _batch()
    stats = diag.batch_statistics(m, x, y)
    grads = tf.GradientTape(persistent=True)
    with grads:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, m(x, training=True)))
    for layer in diag.weight_layers(m):
        g = grads.gradient(loss, layer.bias).numpy().astype(np.float64)
        assert stats[f"grad/{layer.name}/bias_rms"] == pytest.approx(np.sqrt(np.mean(g**2)), rel=1e-5)


class _Sink:
    """Collects what DiagnosticsLogger would send to MLflow (step -> metrics)."""

    def __init__(self):
        self.logged: dict[int, dict] = {}

    def metrics(self, values, step):
        self.logged[step] = values


class _EveryStep(keras.callbacks.Callback):
    """The reference: reads after every step (a host synchronisation per step)."""

    def __init__(self):
        super().__init__()
        self.rows, self.losses, self.weights = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append(self.model.diag_latest().numpy().copy())
        self.losses.append(float(logs["loss"]))
        self.weights.append([w.numpy().copy() for w in self.model.trainable_weights])


def _logger(m, every=5, steps_per_epoch=11):
    from study.callbacks import DiagnosticsLogger

    return DiagnosticsLogger(_Sink(), every, steps_per_epoch)


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_statistics_read_in_blocks_keep_every_step(steps_per_execution):
    x, y = _batch(n=44)  # 11 steps of 4 per epoch, 22 in all: several blocks of 4
    ref_model = _model("relu")
    ref_model.enable_diagnostics("full", "relu", small_grad_threshold=1e-3, block_steps=4)
    ref, ref_log = _EveryStep(), _logger(ref_model)
    ref_model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[ref_log, ref])
    assert len(ref_log.rows) == len(ref.rows) == 22
    np.testing.assert_array_equal(np.vstack(ref_log.rows), np.vstack(ref.rows))
    assert sorted(ref_log.run.logged) == [0, 5, 10, 15, 20]
    assert ref_log.run.logged[15] == dict(zip([s.key for s in ref_model.diag_stats], ref.rows[15].tolist()))

    m = _model("relu")  # the same training, several steps per call, no per-step callback
    m.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution,
    )
    m.enable_diagnostics("full", "relu", small_grad_threshold=1e-3, block_steps=4)
    log = _logger(m)
    m.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[log])
    assert len(log.rows) == 22 and log.diverged_at is None
    np.testing.assert_allclose(np.vstack(log.rows), np.vstack(ref.rows), rtol=1e-5, atol=1e-7)


def test_non_finite_loss_stops_training_at_that_step_although_read_in_blocks():
    x, y = _batch(n=64)
    m = _model("leaky_relu", optimizer=keras.optimizers.SGD(3e3))
    m.enable_diagnostics("full", "leaky_relu", block_steps=8)
    every, log = _EveryStep(), _logger(m, steps_per_epoch=16)
    m.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False, callbacks=[log, every])
    first_bad = next(i for i, loss in enumerate(every.losses) if not np.isfinite(loss))
    assert log.diverged_at == first_bad == m.diag_diverged_step()
    assert len(every.losses) > first_bad + 1  # the host noticed later: those steps ran ...
    assert int(m.optimizer.iterations.numpy()) == first_bad + 1  # ... and changed nothing
    for w, w_then in zip(m.trainable_weights, every.weights[first_bad]):
        np.testing.assert_array_equal(w.numpy(), w_then)
    assert len(log.rows) == first_bad + 1 and not np.isfinite(log.rows[-1]).all()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_signal_probe_and_histograms_share_one_pass_when_the_modes_agree(monkeypatch, batch_norm):
    keras.utils.set_random_seed(1)
    base = models.build(models.ModelSpec(depth=3, width=4, activation="relu", batch_norm=batch_norm), (10, 10, 1), 3)
    m = diag.DiagnosticModel(base.inputs, base.outputs)
    m.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.enable_diagnostics("full", "relu")
    x, y = _batch()
    calls = []
    real = diag._compute
    monkeypatch.setattr(diag, "_compute", lambda *a, **k: calls.append(k["training"]) or real(*a, **k))
    shared = diag.signal_profile(m, x, y)
    hist = diag.histograms(diag.probe_tensors(m, x, y))
    assert calls == ([True, False] if batch_norm else [True])  # batch norm: training and inference differ
    object.__setattr__(m, "_diag_probe_cache", None)
    assert diag.histograms(diag.probe_tensors(m, x, y)) == hist
    assert diag.signal_profile(m, x, y) == shared
    m.fit(x, y, epochs=1, verbose=0)  # the weights changed: a new pass
    n = len(calls)
    diag.signal_profile(m, x, y)
    assert len(calls) == n + 1


@pytest.mark.parametrize("prebuilt, traces", [(False, 2), (True, 1)])
def test_state_built_before_fit_means_the_train_function_is_traced_once(prebuilt, traces):
    from study.runtime import build_state

    x, y = _batch(n=32)
    m = _model("relu", level="default", optimizer=keras.optimizers.Adam(0.01))
    if prebuilt:
        build_state(m, x[:16], y[:16])
    calls = []
    step = m.train_step
    m.train_step = lambda data: calls.append(1) or step(data)  # Python runs it only while tracing
    m.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    # a first trace that creates the optimizer's and metrics' variables is traced again
    assert len(calls) == traces


def _textbook_activation_stats(h, activation):
    """The activation statistics as first written (tf.reduce_mean, tf.math.reduce_std, one
    comparison per statistic): the train step's fewer-pass versions must equal them bit for bit."""
    h = tf.cast(h, tf.float32)
    out = {
        "mean": tf.reduce_mean(h),
        "std": tf.math.reduce_std(h),
        "spread": tf.reduce_mean(tf.math.reduce_std(h, axis=0)),
    }
    if activation in activations.RELU_FAMILY:
        out["zero_frac"] = tf.reduce_mean(tf.cast(h <= 0.0, tf.float32))
        off = diag.inactive(h, activation)
        if off is not None:
            out["dead_frac"] = diag.dead_fraction(off)
    return out


@pytest.mark.parametrize("activation", ["relu", "elu", "selu", "leaky_relu", "sigmoid", "tanh"])
def test_activation_statistics_equal_the_textbook_formulas_bit_for_bit(activation):
    rng = np.random.default_rng(3)
    pre = rng.normal(size=(96, 9, 9, 8)).astype(np.float32) * np.float32(4.0)
    pre[:, :, :, 0] = 7.5 + rng.normal(size=(96, 9, 9)).astype(np.float32) * np.float32(1e-3)  # nearly constant unit
    pre[:, :, :, 1] = -3.0  # a dead or saturated channel
    h = tf.constant(keras.activations.get(activation)(pre))
    for run in (lambda f: f(h), lambda f: tf.function(f)(h)):  # eager, and traced as in the train step
        got = run(lambda t: diag.activation_stats(t, activation))
        want = run(lambda t: _textbook_activation_stats(t, activation))
        assert set(want) <= set(got)
        for key in want:
            assert got[key].numpy().tobytes() == want[key].numpy().tobytes(), (key, float(got[key]), float(want[key]))


# An independent oracle for every statistic the harness records, in numpy (float64), by family:
# (group, stat) -> function. Weight-gradient, bias-gradient and model-wide entries take the gradient(s),
# kernel entries the kernel before and after the step, activation and signal entries the output h
# (examples first, channels last), its gradient gh and the activation's name.
SATURATING = {"sigmoid": (0.01, 0.99), "tanh": (-0.99, 0.99), "softsign": (-0.99, 0.99)}
DEAD_AT = {"relu": 0.0, "elu": -0.99, "selu": -0.99 * 1.0507009873554805 * 1.6732632423543772}


def _np_spread(h):
    return h.reshape(len(h), -1).std(axis=0).mean()


def _np_dead(h, act):
    return np.mean(np.all((h <= DEAD_AT[act]).reshape(-1, h.shape[-1]), axis=0))


ORACLE = {
    ("grad", "l2"): lambda g: np.linalg.norm(g),
    ("grad", "rms"): lambda g: np.sqrt(np.mean(g**2)),
    ("grad", "max"): lambda g: np.abs(g).max(),
    ("grad", "small_frac"): lambda g: np.mean(np.abs(g) < 1e-3),  # _model's small_grad_threshold
    ("grad", "bias_rms"): lambda g: np.sqrt(np.mean(g**2)),
    ("weight", "l2"): lambda w, after: np.linalg.norm(w),
    ("weight", "update_ratio"): lambda w, after: np.linalg.norm(after - w) / np.linalg.norm(w),
    ("global", "global_norm"): lambda gs: np.sqrt(sum(np.sum(g**2) for g in gs)),
    ("global", "nonfinite"): lambda gs: sum(np.sum(~np.isfinite(g)) for g in gs),
    ("backprop", "l2"): lambda h, gh, act: np.linalg.norm(gh),
    ("act", "mean"): lambda h, gh, act: h.mean(),
    ("act", "std"): lambda h, gh, act: h.std(),
    ("act", "spread"): lambda h, gh, act: _np_spread(h),
    ("act", "saturation"): lambda h, gh, act: np.mean((h <= SATURATING[act][0]) | (h >= SATURATING[act][1])),
    ("act", "zero_frac"): lambda h, gh, act: np.mean(h <= 0),
    ("act", "dead_frac"): lambda h, gh, act: _np_dead(h, act),
    ("signal", "spread"): lambda h, gh, act: _np_spread(h),
    ("signal", "rms"): lambda h, gh, act: np.sqrt(np.mean(h**2)),
    ("signal", "backprop_rms"): lambda h, gh, act: np.sqrt(np.mean(gh**2)),
    ("signal", "dead_frac"): lambda h, gh, act: _np_dead(h, act),
}


def test_every_statistic_has_an_independent_oracle_entry():
    """A statistic added to a family table without an oracle here fails this test."""
    defined = {("grad", s) for s in (*diag.WEIGHT_GRAD_STATS, *diag.BIAS_GRAD_STATS)}
    defined |= {("weight", s) for s in diag.KERNEL_STATS} | {("backprop", "l2")}
    defined |= {("global", k.rsplit("/", 1)[-1]) for k in diag.MODEL_STATS}
    defined |= {("act", s) for s in diag.ACTIVATION_STATS} | {("signal", s) for s in diag.SIGNAL_STATS}
    assert defined == set(ORACLE), {"no oracle": defined - set(ORACLE), "no statistic": set(ORACLE) - defined}


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "elu", "swish"])
def test_every_recorded_statistic_equals_its_oracle(activation):
    """batch_statistics (the train step's vector, no update) and signal_profile against ORACLE, key by
    key: every key the harness records for this activation is compared, none is left out."""
    m = _model(activation, head_units=(5,), init="he_normal" if activation in ("relu", "elu") else "glorot_uniform")
    x, y = _batch()
    x = x * np.float32(30.0)  # large inputs: saturated and dead units occur, so those fractions are tested
    ours = diag.batch_statistics(m, x, y)
    acts, grads = _tape(m, x, y)
    as64 = lambda t: t.numpy().astype(np.float64)  # noqa: E731
    wg = {id(v): as64(g) for v, g in zip(m.trainable_weights, grads)}
    out = {
        f"grad/{k}": ORACLE[("global", k)]([as64(g) for g in grads[: len(wg)]]) for k in ("global_norm", "nonfinite")
    }
    for layer in diag.weight_layers(m):
        w = as64(layer.kernel)
        for s in diag.WEIGHT_GRAD_STATS:
            out[f"grad/{layer.name}/{s}"] = ORACLE[("grad", s)](wg[id(layer.kernel)])
        if layer.use_bias:
            out[f"grad/{layer.name}/bias_rms"] = ORACLE[("grad", "bias_rms")](wg[id(layer.bias)])
        for s in diag.KERNEL_STATS:
            out[f"weight/{layer.name}/{s}"] = ORACLE[("weight", s)](w, w)  # no update
    signal = {}
    for (name, h), gh in zip(acts.items(), grads[len(wg) :]):
        h, gh = as64(h), as64(gh)
        out[f"backprop/{name}/l2"] = ORACLE[("backprop", "l2")](h, gh, activation)
        for s in diag.activation_stat_names(activation):
            out[f"act/{name}/{s}"] = ORACLE[("act", s)](h, gh, activation)
        signal[name] = {
            s: ORACLE[("signal", s)](h, gh, activation)
            for s in diag.SIGNAL_STATS
            if s != "dead_frac" or activation in DEAD_AT
        }
    assert set(ours) == set(out), set(ours) ^ set(out)
    for key, value in out.items():
        assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    rows = diag.signal_profile(m, x, y)
    assert {
        r["layer"]: {k: v for k, v in r.items() if k not in ("layer", "layer_index")} for r in rows
    }.keys() == signal.keys()
    for r in rows:
        for s, value in signal[r["layer"]].items():
            assert r[s] == pytest.approx(value, rel=1e-5, abs=1e-9), (r["layer"], s)
        assert set(r) - {"layer", "layer_index"} == set(signal[r["layer"]])


def test_activation_statistics_on_a_schedule_keep_every_value_where_computed_and_the_rest_every_step():
    """diagnostics.activation_every_n_steps: the activation part at step 0, every N steps and from
    the last step on, with the same values as computed at every step; weight-gradient, weight and
    update statistics at every step, unchanged; the step table leaves the other steps' activation
    rows out and says which steps carry them."""
    x, y = _batch(n=44)  # 11 steps of 4 per epoch, 22 in all
    ref_model = _model("relu")
    ref_log = _logger(ref_model)
    ref_model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[ref_log])
    m = _model("relu")  # the same seed: the same initial weights
    m.enable_diagnostics("full", "relu", small_grad_threshold=1e-3, activation_every=4, last_step=21)
    log = _logger(m)
    m.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[log])
    ref, got = np.vstack(ref_log.rows), np.vstack(log.rows)
    act = np.array([s.group in ("act", "backprop") for s in m.diag_stats])
    scheduled = m.diag_activation_steps(np.arange(22))
    assert list(np.flatnonzero(scheduled)) == [0, 4, 8, 12, 16, 20, 21]
    np.testing.assert_allclose(got[:, ~act], ref[:, ~act], rtol=1e-6, atol=1e-9)  # every step, unchanged
    np.testing.assert_allclose(got[scheduled][:, act], ref[scheduled][:, act], rtol=1e-6, atol=1e-9)
    assert np.isnan(got[~scheduled][:, act]).all() and np.isfinite(ref[:, act]).all()
    table = log.table()
    act_steps = sorted(table[table["group"].isin(["act", "backprop"])]["step"].unique())
    assert act_steps == [0, 4, 8, 12, 16, 20, 21] and sorted(table[table["group"] == "grad"]["step"].unique()) == list(
        range(22)
    )
    assert table["value"][table["group"].isin(["act", "backprop"])].notna().all()
    # MLflow points (every 5 steps): activation metrics only where computed (steps 0 and 20)
    logged_act = {s for s, d in log.run.logged.items() if any(k.startswith("act/") for k in d)}
    assert sorted(log.run.logged) == [0, 5, 10, 15, 20] and logged_act == {0, 20}
