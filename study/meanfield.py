"""Mean-field predictions of signal propagation at initialisation (Poole et al. 2016; Schoenholz et
al. 2017), for networks whose weights are N(0, σ_w² / fan_in) and biases N(0, σ_b²) (σ_b = 0 here:
Keras's zero biases).

With q^l the variance of a pre-activation z^l of layer l (over units and examples), the forward
*length map* is q^{l+1} = σ_w² E_z[φ(√q^l z)²] + σ_b², z ~ N(0, 1); the mean squared activation
output is r_l² = E[φ(√q^l z)²]. Back-propagated gradients with respect to the activation outputs
shrink or grow per layer by χ^l = σ_w² E[φ'(√q^l z)²] (equal widths): vanishing for χ < 1 (the
ordered phase), exploding for χ > 1 (chaos). For ReLU the maps are linear: q^{l+1} = σ_w²/2 q^l and
χ = σ_w²/2, so He's σ_w² = 2 is the fixed point where both stay constant through depth. For tanh
with σ_b = 0 the order-to-chaos boundary is σ_w² = 1. Gaussian expectations by Gauss–Hermite
quadrature.
"""

from __future__ import annotations

import numpy as np

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(121)  # probabilists' Hermite: weight exp(-z²/2)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()

PHI = {
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
}


def moments(activation: str, q: float) -> tuple[float, float]:
    """(E[φ(√q z)²], E[φ'(√q z)²]): closed forms for ReLU (q/2, 1/2; quadrature would blur its
    step), Gauss–Hermite quadrature for tanh."""
    if activation == "relu":
        return q / 2.0, 0.5
    return mean_square(activation, q), gauss(lambda z: PHI[activation][1](z) ** 2, q)


def mean_square(activation: str, q: float) -> float:
    """E[φ(√q z)²] alone (the first of `moments`): what the length map and its inversions iterate."""
    if activation == "relu":
        return q / 2.0
    return gauss(lambda z: PHI[activation][0](z) ** 2, q)


def gauss(f, q: float) -> float:
    """E[f(√q z)], z ~ N(0, 1)."""
    return float(np.sum(_WEIGHTS * f(np.sqrt(max(q, 0.0)) * _NODES)))


def propagate(activation: str, sigma_w2: float, q1: float, layers: int, sigma_b2: float = 0.0) -> dict:
    """Per hidden layer l = 1 … `layers` (q1: the first layer's pre-activation variance): q^l, the
    predicted RMS of its activation output r_l, and χ^l = σ_w² E[φ'(√q^l z)²], the factor by which
    the mean squared back-propagated gradient grows from layer l to layer l − 1."""
    q, out = float(q1), {"q": [], "rms": [], "chi": []}
    for _ in range(layers):
        r2, d2 = moments(activation, q)
        out["q"].append(q)
        out["rms"].append(float(np.sqrt(r2)))
        out["chi"].append(sigma_w2 * d2)
        q = sigma_w2 * r2 + sigma_b2
    return {k: np.asarray(v) for k, v in out.items()}


def q_from_rms(activation: str, rms: float) -> float:
    """The pre-activation variance q whose activation output has this RMS (inverting r² = E[φ(√q z)²],
    monotone in q for tanh and ReLU)."""
    target = rms**2
    if activation == "relu":
        return 2.0 * target
    lo, hi = 0.0, 1.0
    while mean_square(activation, hi) < target and hi < 1e8:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_square(activation, mid) < target else (lo, mid)
    return (lo + hi) / 2


def tanh_fixed_point(sigma_w2: float, sigma_b2: float = 0.0) -> float:
    """q* of the tanh length map (0 in the ordered phase σ_w² <= 1 with σ_b = 0)."""
    q = 10.0
    for _ in range(2000):
        q = sigma_w2 * mean_square("tanh", q) + sigma_b2
    return q


def chi_at_fixed_point(activation: str, sigma_w2: float) -> float:
    """χ where the length map has converged: σ_w² E[φ'(√q* z)²] for tanh (σ_w² itself in the ordered
    phase, q* = 0), σ_w²/2 for ReLU (at every q)."""
    if activation == "relu":
        return sigma_w2 / 2.0
    return sigma_w2 * moments("tanh", tanh_fixed_point(sigma_w2))[1]


def stage_ends(depth: int, pools: int, pool_after: list[int] | None = None) -> set[int]:
    """The CNN's conv indices (1-based) after which a 2×2 max pool halves the resolution and the
    channels double (study.models builds its nets by this rule): `pool_after` where given, else
    `pools` pools splitting the depth into equal stages."""
    if pool_after is not None:
        return set(pool_after)
    stages = min(pools + 1, depth)
    return {round(depth * s / stages) for s in range(1, stages)}


def inverse_width_sum(
    depth: int, width: int, pools: int = 2, pool_after: list[int] | None = None, double: bool = True
) -> float:
    """Σ 1/n_l over the CNN's conv layers, n_l its channels (`width`, doubled after each pool unless
    not `double`; the models' default of 2 pools, or those after `pool_after`): the size of a deep
    ReLU net's finite-width fluctuations at initialisation grows with it (Hanin & Rolnick 2018); 1.59
    for 22 layers of width 8, 2.19 for 30, 0.42 for 27 of a constant 64."""
    ends, filters, total = stage_ends(depth, pools, pool_after), width, 0.0
    for j in range(1, depth + 1):
        total += 1.0 / filters
        if j in ends and double:
            filters *= 2
    return total
