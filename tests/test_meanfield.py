"""Mean-field predictions (study/meanfield.py) against closed forms and Monte Carlo, and against a
real wide network's signal probe at initialisation."""

import keras
import numpy as np
import pytest

from study import diagnostics as diag
from study import losses, meanfield, models


def test_relu_maps_are_linear_and_he_is_their_fixed_point():
    assert meanfield.moments("relu", 3.0) == (1.5, 0.5)
    he = meanfield.propagate("relu", 2.0, q1=1.7, layers=12)
    assert np.allclose(he["q"], 1.7) and np.allclose(he["chi"], 1.0)
    half = meanfield.propagate("relu", 1.0, q1=1.0, layers=5)
    assert np.allclose(half["q"], 0.5 ** np.arange(5)) and np.allclose(half["chi"], 0.5)
    assert meanfield.q_from_rms("relu", 2.0) == pytest.approx(8.0)


def test_tanh_moments_match_their_series_and_monte_carlo():
    q = 1e-4  # E[tanh²(√q z)] = q - 2q² + O(q³); E[sech⁴] = 1 - 2q + 7q² + O(q³)
    r2, d2 = meanfield.moments("tanh", q)
    assert r2 == pytest.approx(q - 2 * q**2, rel=1e-6) and d2 == pytest.approx(1 - 2 * q + 7 * q**2, rel=1e-9)
    z = np.random.default_rng(0).standard_normal(2_000_000)
    r2, d2 = meanfield.moments("tanh", 2.0)
    assert r2 == pytest.approx(np.mean(np.tanh(np.sqrt(2.0) * z) ** 2), abs=2e-3)
    assert d2 == pytest.approx(np.mean(np.cosh(np.sqrt(2.0) * z) ** -4), abs=2e-3)
    assert meanfield.q_from_rms("tanh", np.sqrt(r2)) == pytest.approx(2.0, rel=1e-6)


def test_tanh_order_to_chaos_boundary_is_at_sigma_w2_one_without_bias():
    assert meanfield.tanh_fixed_point(0.5) < 1e-6  # ordered: the signal dies
    q = meanfield.tanh_fixed_point(2.0)
    assert q > 0.5 and q == pytest.approx(2.0 * meanfield.moments("tanh", q)[0], rel=1e-9)
    assert meanfield.chi_at_fixed_point("tanh", 0.5) == pytest.approx(0.5, rel=1e-3)
    assert meanfield.chi_at_fixed_point("tanh", 1.0) == pytest.approx(1.0, abs=0.02)
    assert meanfield.chi_at_fixed_point("tanh", 2.0) > 1.05  # chaotic: gradients explode


@pytest.mark.parametrize("activation, sigma_w2", [("relu", 1.0), ("relu", 2.0), ("tanh", 0.5), ("tanh", 2.0)])
def test_a_wide_mlp_at_initialisation_propagates_as_predicted(activation, sigma_w2):
    """Width 512, 8 hidden layers, 512 standard-normal inputs: the signal probe's per-layer gradient
    rate within 10 % of mean-field χ and the last layer's RMS within a factor 1.25 (the
    signal_propagation preset's tolerances)."""
    keras.utils.set_random_seed(0)
    spec = models.ModelSpec(
        kind="mlp", depth=8, width=512, activation=activation, init="scaled_normal", init_scale=sigma_w2
    )
    base = models.build(spec, (16, 16, 1), 10)
    m = diag.DiagnosticModel(base.inputs, base.outputs)
    m.compile(optimizer="sgd", loss=losses.build("cross_entropy", 10))
    m.enable_diagnostics("default", activation)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 10, 512).astype("int32")
    rows = diag.signal_profile(m, x, y)
    rms = np.array([r["rms"] for r in rows])
    grad = np.array([r["backprop_rms"] for r in rows])
    pred = meanfield.propagate(activation, sigma_w2, meanfield.q_from_rms(activation, rms[0]), len(rows))
    rate = np.exp(np.mean(np.log((grad[:-1] / grad[1:]) ** 2)))
    assert rate == pytest.approx(np.exp(np.mean(np.log(pred["chi"][1:]))), rel=0.10)
    assert 0.8 <= rms[-1] / pred["rms"][-1] <= 1.25


@pytest.mark.parametrize(
    "depth, width, layout, expected",
    [
        (22, 8, {}, 1.594),
        (30, 8, {}, 2.188),
        (30, 32, {}, 0.547),
        (27, 64, {"pool_after": [1, 2], "double": False}, 0.422),
    ],
)
def test_inverse_width_sum_is_the_built_cnns_sum_over_its_conv_channels(depth, width, layout, expected):
    """he_2015's Σ 1/n_l, from the nets study.models builds (not from a second copy of its pool rule)."""
    double = layout.get("double", True)
    spec = models.ModelSpec(
        kind="cnn", depth=depth, width=width, activation="relu", init="he_normal",
        pool_after=layout.get("pool_after"), double_at_pool=double,
    )  # fmt: skip
    net = models.build(spec, (28, 28, 1), 10)
    convs = [l.filters for l in net.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == depth
    assert (
        meanfield.inverse_width_sum(depth, width, pool_after=layout.get("pool_after"), double=double)
        == pytest.approx(sum(1 / n for n in convs))
        == pytest.approx(expected, abs=1e-3)
    )
