"""Every registry entry builds and trains a step; schedules give the documented values."""

from pathlib import Path

import keras
import numpy as np
import pytest

from study import activations, models, optimizers


def _tiny_step(activation="relu", optimizer="adam", lr=0.01, params=None):
    """One step, eagerly: the entry's layer and update rule are the same ops as in a traced step
    (tracing, 1 s a model here, is what the train-step tests check; these check the entries)."""
    keras.utils.set_random_seed(0)
    m = models.build(models.ModelSpec(depth=2, width=4, activation=activation), (12, 12, 1), 3)
    m.compile(
        optimizer=optimizers.build(optimizer, lr, params),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    x = np.random.default_rng(0).random((16, 12, 12, 1), dtype=np.float32)
    y = np.arange(16) % 3
    before = [w.numpy().copy() for w in m.trainable_weights]
    loss = m.train_on_batch(x, y)
    changed = any(not np.allclose(a, w.numpy()) for a, w in zip(before, m.trainable_weights))
    return float(loss), changed


@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_every_activation_builds_and_trains_a_step(name):
    loss, changed = _tiny_step(activation=name)
    assert np.isfinite(loss) and changed


@pytest.mark.parametrize("name", sorted(optimizers.OPTIMIZERS))
def test_every_optimizer_builds_and_trains_a_step(name):
    loss, changed = _tiny_step(optimizer=name)
    assert np.isfinite(loss) and changed


def test_activation_parameters_reach_the_layer():
    assert activations.make("leaky_relu", "a", {"alpha": 0.2}).negative_slope == pytest.approx(0.2)
    assert activations.make("elu", "a", {"alpha": 0.5}).alpha == pytest.approx(0.5)
    x = np.array([[-1.0, 2.0]], np.float32)
    np.testing.assert_allclose(activations.make("leaky_relu", "a", {"alpha": 0.2})(x), [[-0.2, 2.0]], rtol=1e-6)


def test_momentum_and_nesterov_take_their_momentum_from_their_yaml_and_refuse_none():
    """The default (0.9) lives in conf/optimizer/*.yaml only; without it SGD's momentum would be 0."""
    import yaml

    from study.errors import ConfigError

    conf = Path(__file__).resolve().parent.parent / "conf" / "optimizer"
    for name in ("momentum", "nesterov"):
        params = yaml.safe_load((conf / f"{name}.yaml").read_text())["params"]
        opt = optimizers.build(name, 0.01, params)
        assert opt.momentum == pytest.approx(0.9) and opt.nesterov == (name == "nesterov")
        with pytest.raises(ConfigError, match=f"optimizer '{name}' needs optimizer.params.momentum"):
            optimizers.check(name, 0.01, {}, "constant", None, None)


@pytest.mark.parametrize("name", ["sgd", "momentum"])
def test_sgd_weight_decay_is_keras_decoupled_decay(name):
    """optimizer.params.weight_decay λ: with a zero gradient one step shrinks w by η·λ·w exactly
    (not an L2 term in the loss, whose gradient momentum would carry on)."""
    params = {"weight_decay": 0.5, **({"momentum": 0.9} if name == "momentum" else {})}
    optimizers.check(name, 0.1, params, "constant", None, None)
    opt = optimizers.build(name, 0.1, params)
    v = keras.Variable(np.full(3, 2.0, np.float32))
    opt.apply_gradients([(np.zeros(3, np.float32), v)])
    np.testing.assert_allclose(v.numpy(), 2.0 * (1 - 0.1 * 0.5), rtol=1e-6)
    from study.errors import ConfigError

    with pytest.raises(ConfigError, match="weight_decay"):
        optimizers.check("adagrad", 0.1, {"weight_decay": 0.5}, "constant", None, None)


def test_gradient_clipping_is_applied():
    opt = optimizers.build("sgd", 1.0, clipnorm=0.5)
    assert opt.clipnorm == 0.5
    v = keras.Variable(np.zeros(4, np.float32))
    opt.apply_gradients([(np.full(4, 10.0, np.float32), v)])
    assert np.linalg.norm(v.numpy()) == pytest.approx(0.5, rel=1e-5)


def test_schedules():
    spe, epochs, lr = 10, 4, 0.1
    exp = optimizers.schedule("exponential", lr, spe, epochs, decay_rate=0.5, decay_epochs=1)
    step = optimizers.schedule("step", lr, spe, epochs, decay_rate=0.1, decay_epochs=2)
    cos = optimizers.schedule("cosine", lr, spe, epochs, alpha=0.0)
    assert optimizers.schedule("constant", lr, spe, epochs) == lr
    assert float(exp(10)) == pytest.approx(0.05) and float(exp(5)) == pytest.approx(0.1 * 0.5**0.5)
    assert float(step(19)) == pytest.approx(0.1) and float(step(20)) == pytest.approx(0.01)
    assert (
        float(cos(0)) == pytest.approx(0.1)
        and float(cos(20)) == pytest.approx(0.05)
        and float(cos(40)) == pytest.approx(0.0, abs=1e-8)
    )


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8, 16, 32])
def test_cnn_depths_valid_on_28x28(depth):
    m = models.build(models.ModelSpec(depth=depth, width=4), (28, 28, 1), 10)
    convs = [l for l in m.layers if isinstance(l, keras.layers.Conv2D)]
    pools = [l for l in m.layers if isinstance(l, keras.layers.MaxPooling2D)]
    assert len(convs) == depth and len(pools) == min(2, depth - 1)
    assert m.output_shape == (None, 10)
    assert [l.name for l in convs] == [f"conv_{i:02d}" for i in range(1, depth + 1)]


def test_cnn_options_batch_norm_dropout_regularisation_head():
    spec = models.ModelSpec(depth=3, width=4, batch_norm=True, dropout=0.5, l2=1e-3, head_units=[8], init="he_normal")
    m = models.build(spec, (28, 28, 1), 10)
    names = [l.name for l in m.layers]
    assert "bn_conv_01" in names and "dense_01" in names and "act_dense_01" in names and "dropout_01" in names
    assert len(m.losses) == 5  # an L2 penalty per conv and dense kernel
    assert isinstance(m.get_layer("conv_01").kernel_initializer, keras.initializers.HeNormal)
    assert m.get_layer("bn_conv_01").momentum == 0.99  # Keras's default unless model.bn_momentum is set
    fast = models.build(models.ModelSpec(depth=3, width=4, batch_norm=True, bn_momentum=0.9), (28, 28, 1), 10)
    assert {l.momentum for l in fast.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.9}


def test_mlp_builder():
    m = models.build(models.ModelSpec(kind="mlp", depth=5, width=16, activation="tanh"), (8, 8, 1), 10)
    assert [l.name for l in m.layers if isinstance(l, keras.layers.Dense)] == [
        f"dense_{i:02d}" for i in range(1, 6)
    ] + ["logits"]


def test_residual_cnn_skips_only_where_shapes_match_and_computes_x_plus_block():
    m = models.build(models.ModelSpec(depth=6, width=4, residual=True), (28, 28, 1), 10)
    adds = [l.name for l in m.layers if isinstance(l, keras.layers.Add)]
    # pools after conv 2 and 4 double the width: conv 1 (1 -> 4 channels), 3 and 5 have no skip
    assert adds == ["add_conv_02", "add_conv_04", "add_conv_06"]
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    probe = keras.Model(
        m.inputs,
        [
            m.get_layer("pool_02").output,
            m.get_layer("act_conv_03").output,
            m.get_layer("act_conv_04").output,
            m.get_layer("add_conv_04").output,
        ],
    )
    _, h3, h4, out = (np.asarray(t) for t in probe(x))
    np.testing.assert_allclose(out, h3 + h4, rtol=1e-6)
    plain = models.build(models.ModelSpec(depth=6, width=4), (28, 28, 1), 10)
    assert not any(isinstance(l, keras.layers.Add) for l in plain.layers)


def test_standard_uniform_is_glorot_bengios_standard_init():
    keras.utils.set_random_seed(0)
    m = models.build(models.ModelSpec(kind="mlp", depth=2, width=400, init="standard_uniform"), (20, 20, 1), 10)
    w = m.get_layer("dense_02").kernel.numpy()  # fan_in 400: U[-1/20, 1/20], std 1/(20 sqrt 3)
    assert np.abs(w).max() <= 1 / 20 and np.abs(w).max() > 0.049
    assert w.std() == pytest.approx(1 / (20 * np.sqrt(3)), rel=0.01)


def test_pool_after_places_the_pools_and_double_at_pool_false_keeps_the_width():
    """he_2015's layout: pools after conv 1 and 2, then every conv at a quarter of the side, one width."""
    spec = models.ModelSpec(depth=5, width=3, pool_after=[1, 2], double_at_pool=False)
    m = models.build(spec, (12, 12, 1), 2)
    convs = [layer for layer in m.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [3] * 5
    assert [c.output.shape[1] for c in convs] == [12, 6, 3, 3, 3]
    assert [layer.name for layer in m.layers if layer.name.startswith("pool_")] == ["pool_01", "pool_02"]
    doubled = models.build(models.ModelSpec(depth=5, width=3, pool_after=[1, 2]), (12, 12, 1), 2)
    assert [c.filters for c in doubled.layers if isinstance(c, keras.layers.Conv2D)] == [3, 6, 12, 12, 12]
    for bad in ([2, 1], [1, 1], [0], [6], [1, 2, 3]):
        with pytest.raises(models.ConfigError, match=r"model.pool_after=\[.*must list at most 2 increasing"):
            models.check(models.ModelSpec(depth=5, pool_after=bad))


@pytest.mark.parametrize("pooling", sorted(models.POOLS))
def test_each_pooling_is_the_cnn_s_stage_pool_and_averages_or_takes_the_max(pooling):
    m = models.build(models.ModelSpec(depth=3, width=2, pooling=pooling, max_pools=1), (4, 4, 1), 2)
    (pool,) = [layer for layer in m.layers if layer.name.startswith("pool_")]
    assert isinstance(pool, models.POOLS[pooling])
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    want = x.reshape(2, 2, 2, 2).swapaxes(1, 2).reshape(2, 2, 4)  # the four 2×2 windows
    np.testing.assert_allclose(pool(x)[0, ..., 0], want.mean(-1) if pooling == "average" else want.max(-1))
    with pytest.raises(models.ConfigError, match="unknown model.pooling 'min'; valid choices: average, max"):
        models.check(models.ModelSpec(pooling="min"))


def test_every_optimizer_has_its_yaml_and_every_yaml_its_optimizer():
    """Adding an optimizer is its entry in OPTIMIZERS and conf/optimizer/<name>.yaml (its learning rate
    and params: the one place they are set); this test fails when either is missing."""
    import yaml

    conf = Path(__file__).resolve().parent.parent / "conf" / "optimizer"
    names = {p.stem: yaml.safe_load(p.read_text())["name"] for p in conf.glob("*.yaml")}
    assert all(stem == name for stem, name in names.items()), names
    assert set(names) == set(optimizers.OPTIMIZERS)
