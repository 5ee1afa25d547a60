"""Second order: Hessian-vector products against finite differences and an explicit Hessian, Lanczos
and Hutchinson against numpy's eigenvalues and trace, the damped Newton optimizer, the curvature
diagnostics and the mean-squared-error loss of a recorded cell."""

import contextlib

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers.mlflow_queries import runs

from study import curvature, losses, models, optimizers, verdicts
from study import diagnostics as diag
from study.errors import ConfigError
from study.newton import Newton
from study.train import train


@contextlib.contextmanager
def float64():
    """Models built inside use float64 weights (finite differences need the precision). The global
    dtype policy decides (train() sets one), floatx only where none was set."""
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        keras.config.set_floatx(floatx)


def tiny(kind: str, activation="tanh", loss="cross_entropy", width=3, depth=2, shape=(6, 6, 1), k=3):
    """A harness model of at most 300 parameters on random data, compiled with `loss`."""
    keras.utils.set_random_seed(1)
    spec = models.ModelSpec(kind=kind, depth=depth, width=width, activation=activation)
    base = models.build(spec, shape, k)
    m = diag.DiagnosticModel(base.inputs, base.outputs)
    m.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.build(loss, k))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, *shape)).astype(keras.config.floatx())
    y = rng.integers(0, k, 40).astype("int32")
    assert m.count_params() <= 300
    return m, x, y


def jacobian_hessian(m, x, y) -> np.ndarray:
    """The Hessian as the Jacobian of the gradient (TensorFlow's jacobian, not Hessian-vector products)."""
    w = m.trainable_weights
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = m._compute_loss(x=x, y=y, y_pred=m(x, training=True), training=True)
        g = tf.concat([tf.reshape(t, [-1]) for t in inner.gradient(loss, w)], 0)
    blocks = outer.jacobian(g, w)
    return np.concatenate([np.reshape(b.numpy(), (g.shape[0], -1)) for b in blocks], axis=1)


def flat_grad(m, x, y) -> np.ndarray:
    with tf.GradientTape() as tape:
        loss = m._compute_loss(x=x, y=y, y_pred=m(x, training=True), training=True)
    return np.concatenate([np.ravel(t.numpy()) for t in tape.gradient(loss, m.trainable_weights)])


def set_flat(m, theta: np.ndarray) -> None:
    i = 0
    for w in m.trainable_weights:
        n = int(np.prod(w.shape))
        w.assign(theta[i : i + n].reshape(w.shape))
        i += n


@pytest.mark.parametrize("kind, activation", [("mlp", "tanh"), ("cnn", "elu")])
def test_hessian_vector_products_match_finite_differences_and_the_explicit_hessian(kind, activation):
    with float64():
        m, x, y = tiny(kind, activation, width=2 if kind == "cnn" else 3)
        hvp = curvature.HessianVectorProduct(m, x, y, chunk=16)  # 3 chunks: the mean over chunks
        theta = np.concatenate([np.ravel(w.numpy()) for w in m.trainable_weights])
        v = np.random.default_rng(5).standard_normal(hvp.n)
        eps = 1e-5
        set_flat(m, theta + eps * v)
        g_plus = flat_grad(m, x, y)
        set_flat(m, theta - eps * v)
        g_minus = flat_grad(m, x, y)
        set_flat(m, theta)
        fd = (g_plus - g_minus) / (2 * eps)
        hv = hvp(v)
        assert np.linalg.norm(hv - fd) <= 1e-4 * np.linalg.norm(fd)
        h = jacobian_hessian(m, x, y)
        assert np.abs(h - h.T).max() <= 1e-8 * np.abs(h).max()
        explicit = curvature.explicit_hessian(m, x, y)  # n HVPs with unit vectors
        assert np.linalg.norm(explicit - h) <= 1e-4 * np.linalg.norm(h)
        assert np.linalg.norm(hv - h @ v) <= 1e-4 * np.linalg.norm(h @ v)


def test_lanczos_and_hutchinson_agree_with_eigvalsh_and_the_trace_of_the_explicit_hessian():
    m, x, y = tiny("mlp", "tanh", width=4)  # float32, as in training
    hvp = curvature.HessianVectorProduct(m, x, y)
    h = jacobian_hessian(m, x, y)
    eig = np.linalg.eigvalsh((h + h.T) / 2)
    got = curvature.measure(hvp, iterations=30, top_k=3, trace_samples=0, seed=0)
    assert got["lambda_max"] == pytest.approx(eig[-1], rel=1e-4)
    assert got["lambda_2"] == pytest.approx(eig[-2], rel=1e-3)
    assert got["hvps"] == 30
    full = curvature.lanczos(hvp, hvp.n, hvp.n, seed=1)  # n iterations: the whole spectrum
    assert full[0] == pytest.approx(eig[0], rel=1e-3, abs=1e-5) and full[-1] == pytest.approx(eig[-1], rel=1e-4)
    trace, se = curvature.hutchinson_trace(hvp, hvp.n, samples=400, seed=0)
    assert abs(trace - np.trace(h)) <= 4 * se and se < 0.2 * abs(np.trace(h))


def test_two_over_lr_is_the_quadratic_stability_threshold():
    assert curvature.two_over_lr("sgd", 0.05) == pytest.approx(40.0)
    assert curvature.two_over_lr("momentum", 0.01, 0.9) == pytest.approx(380.0)
    assert curvature.two_over_lr("adam", 0.001) is None
    # on a quadratic ½ λ w², GD with η just below / above 2/λ contracts / grows
    lam = 8.0
    for eta, shrinks in ((0.99 * 2 / lam, True), (1.01 * 2 / lam, False)):
        w = 1.0
        for _ in range(200):
            w -= eta * lam * w
        assert (abs(w) < 1) == shrinks


def test_one_newton_step_solves_a_convex_quadratic():
    """A linear model under mean squared error is a convex quadratic in its weights: one undamped
    Newton step from anywhere lands on the least-squares solution."""
    with float64():
        keras.utils.set_random_seed(3)
        rng = np.random.default_rng(3)
        x = rng.standard_normal((64, 5))
        labels = rng.integers(0, 3, 64).astype("int32")
        inputs = keras.Input((5,))
        m = diag.DiagnosticModel(inputs, keras.layers.Dense(3, name="logits")(inputs))
        opt = Newton(1.0, damping=1e-9, cg_iters=50, cg_tol=1e-9, adapt_damping=False, min_damping=1e-12)
        m.compile(optimizer=opt, loss=losses.build("mse", 3))
        m.enable_diagnostics("off", "linear")
        before = m.evaluate(x, labels, verbose=0)
        m.train_on_batch(x, labels)
        a = np.hstack([x, np.ones((64, 1))])
        solution, *_ = np.linalg.lstsq(a, np.eye(3)[labels], rcond=None)
        kernel, bias = (w.numpy() for w in m.trainable_weights)
        assert np.abs(np.vstack([kernel, bias]) - solution).max() < 1e-5
        best = np.mean((a @ solution - np.eye(3)[labels]) ** 2)
        assert m.evaluate(x, labels, verbose=0) == pytest.approx(best, rel=1e-6) and best < before
        damping, cg_iterations, rho, accepted, negative, step_scale = opt.diag_values().numpy()
        assert accepted == 1 and step_scale == 1 and negative == 0 and cg_iterations <= 18
        assert rho == pytest.approx(1.0, abs=1e-3)


def test_newton_damping_grows_when_the_quadratic_model_is_wrong_and_steps_never_raise_the_loss():
    m, x, y = tiny("mlp", "tanh", width=4)
    opt = Newton(1.0, damping=1e-3, cg_iters=10)
    m.compile(optimizer=opt, loss=losses.build("cross_entropy", 3))
    m.enable_diagnostics("off", "tanh")
    loss = m.evaluate(x, y, verbose=0)
    seen = []
    for _ in range(10):
        m.train_on_batch(x, y)
        new = m.evaluate(x, y, verbose=0)
        assert new <= loss + 1e-6  # a step that would raise the batch's loss is not taken
        loss = new
        seen.append(opt.diag_values().numpy())
    seen = np.array(seen)  # damping, CG iterations, rho, accepted, negative curvature, step scale
    assert seen[:, 3].sum() >= 6 and loss < 0.5  # it learns the 40 random labels
    assert (seen[:, 5] < 1).any() and (seen[:, 5] == 1).any()  # some steps shortened by the line search
    for prev, row in zip(seen, seen[1:]):  # λ × 3/2 after a shortened, rejected or poor step, × 2/3 after a good one
        factor = row[0] / prev[0]
        poor = prev[3] == 0 or prev[5] < 1 or prev[2] < 0.25
        expected = 1.5 if poor else (2 / 3 if prev[2] > 0.75 else 1.0)
        assert factor == pytest.approx(expected, rel=1e-5)


def test_newton_names_its_limit_for_a_model_too_large_and_refuses_clipping():
    m, _, _ = tiny("mlp", width=4)
    with pytest.raises(
        ConfigError, match=rf"has {m.count_params()} parameters, the limit is optimizer.params.max_params=100"
    ):
        Newton(max_params=100).check_size(m)
    with pytest.raises(ConfigError, match="clipnorm=1.0: optimizer=newton takes no gradient clipping"):
        optimizers.check("newton", 1.0, {}, "constant", 1.0, None)
    with pytest.raises(ConfigError, match="cg_iters=0 must be an integer >= 1"):
        optimizers.check("newton", 1.0, {"cg_iters": 0}, "constant", None, None)
    with pytest.raises(ConfigError, match=r"takes no parameter \['beta_1'\]"):
        optimizers.check("newton", 1.0, {"beta_1": 0.9}, "constant", None, None)


@pytest.mark.parametrize(
    "override, words",
    [
        ("diagnostics.curvature.every_n_steps=-1", ["every_n_steps=-1", ">= 0"]),
        ("diagnostics.curvature.iterations=0", ["iterations=0", ">= 1"]),
        ("diagnostics.curvature.examples=0", ["examples=0", "null"]),
        ("diagnostics.curvature.top_k=30", ["top_k=30", "iterations=20"]),
        ("train.loss=hinge", ["train.loss 'hinge'", "cross_entropy", "mse"]),
        ("model.width=64", ["parameters, the limit is optimizer.params.max_params=1,000"]),
    ],
)
def test_bad_second_order_values_fail_before_training(make_cfg, store, override, words):
    cfg = make_cfg("optimizer=newton", "optimizer.params.max_params=1000", override)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert all(w in str(err.value) for w in words), str(err.value)
    if "width" not in override:  # the size limit needs the model, built after the run started
        assert runs(store[1]) == []


def test_a_newton_cell_records_its_steps_and_curvature_beside_two_over_lr(make_cfg, store):
    result = train(
        make_cfg(
            "optimizer=newton",
            "train.batch_size=full",
            "train.epochs=4",
            "optimizer.params.cg_iters=5",
            "diagnostics.curvature.every_n_steps=2",
            "diagnostics.curvature.iterations=6",
            "diagnostics.curvature.trace_samples=2",
        )
    )
    _, client = store
    (run,) = runs(client)
    assert run.info.status == "FINISHED" and result["outcome"] == "finished"
    rid = run.info.run_id
    assert [m.step for m in client.get_metric_history(rid, "curv/lambda_max")] == [0, 2, 4]
    assert [m.step for m in client.get_metric_history(rid, "newton/damping")] == [0, 1, 2, 3]
    assert "curv/two_over_lr" not in run.data.metrics  # no such threshold for Newton
    assert {"curv/trace", "curv/trace_se", "curv/lambda_min", "grad/global_norm"} <= set(run.data.metrics)
    table = pd.read_parquet(client.download_artifacts(rid, "curvature.parquet"))
    assert set(table["stat"]) >= {"lambda_max", "lambda_min", "trace", "hvps", "seconds"}
    assert table.loc[table["stat"] == "hvps", "value"].tolist() == [8.0, 8.0, 8.0]  # 6 Lanczos + 2 probes
    steps = pd.read_parquet(client.download_artifacts(rid, "diagnostics.parquet"))
    accepted = steps[steps["stat"] == "accepted"]["value"]
    assert len(accepted) == 4 and accepted.sum() >= 1
    assert result["eval_train/loss"] < result["test/loss"] + 1.0  # it trained; the loss is finite


def test_sgd_cell_with_mse_records_two_over_lr_and_judges_progress_against_the_mse_of_chance(make_cfg, store):
    result = train(
        make_cfg(
            "optimizer=sgd",
            "optimizer.learning_rate=0.4",
            "train.loss=mse",
            "train.batch_size=full",
            "train.epochs=3",
            "data.standardize=true",
            "diagnostics.curvature.every_n_steps=1",
            "diagnostics.curvature.iterations=5",
        )
    )
    (run,) = runs(store[1])
    rid = run.info.run_id
    assert [m.value for m in store[1].get_metric_history(rid, "curv/two_over_lr")] == pytest.approx([5.0] * 4)
    assert run.data.params["train.loss"] == "mse"
    k = 4
    assert result["diag/progress"] == pytest.approx(1 - run.data.metrics["val/loss"] / ((k - 1) / k**2), rel=1e-6)
    assert "chance loss" in result["verdict_reason"]
    assert verdicts.chance_loss(10, "mse") == pytest.approx(0.09) and verdicts.chance_loss(10) == pytest.approx(
        np.log(10)
    )
