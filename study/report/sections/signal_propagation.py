"""Report section of the `signal_propagation` preset: the forward signal and the back-propagated
gradients of deep tanh and ReLU networks at initialisation, measured (the signal probe of each run,
`signal.parquet`, phase `init`) against mean-field theory (study/meanfield.py).

Per run: the predicted per-layer RMS of the activation outputs, iterated by the length map from the
run's measured first layer, and the predicted per-layer gradient factor χ^l. Measured per-layer
gradient rate: the geometric mean over adjacent hidden layers of (RMS dL/dh_l / RMS dL/dh_{l+1})².
Tolerances, fixed before the preset was first run: the rate within ±10 % of the predicted geometric
mean of χ (mean over seeds), and the last hidden layer's RMS within a factor 1.25 of the prediction.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from study import contract, meanfield
from study.report import stats
from study.report.md import md_table
from study.report.sections.registry import Figure, register
from study.report.style import colors

RATE_TOLERANCE = 0.10  # |measured / predicted - 1| of the per-layer gradient rate
FORWARD_TOLERANCE = 1.25  # factor between measured and predicted RMS of the last hidden layer
# Positively homogeneous activations (φ(cz) = c·φ(z) for c > 0). Without biases, one seed's nets at
# different σ_w² are the same weights rescaled: every layer's output scales by a known factor and its
# ReLU mask is the same, so measured/predicted forward RMS is the same number in every σ_w² row and
# the gradient rate differs only through the softmax at the top. Those rows are one test, not several.
HOMOGENEOUS = {"relu"}


def test_of(model: str, activation: str, sigma_w2: float) -> str:
    """The independent test a setting belongs to: one per model for a homogeneous activation (its
    σ_w² rows rescale the same weights), one per σ_w² otherwise."""
    return f"{model} {activation}" if activation in HOMOGENEOUS else f"{model} {activation} σ_w² {sigma_w2:g}"


def rescaling_spread(runs: pd.DataFrame, measured: str = "rms_last") -> float:
    """Largest relative spread, over the homogeneous settings' seeds, of measured/predicted `measured`
    (`rms_last` or `rate`) across σ_w²: 0 for the forward RMS where the σ_w² rows are exactly the same
    weights rescaled; small, not 0, for the gradient rate (the softmax sees rescaled logits)."""
    h = runs[runs["activation"].isin(HOMOGENEOUS)]
    if h.empty:
        return float("nan")
    r = h.assign(x=h[measured] / h[f"{measured}_predicted"]).groupby(["model", "activation", "seed"])["x"]
    return float((r.max() / r.min() - 1).max())


def per_run(cells: pd.DataFrame, signal: pd.DataFrame) -> pd.DataFrame:
    """One row per run: axes, measured and predicted per-layer gradient rate, last-layer RMS."""
    sig = signal[signal["phase"] == "init"]
    rows = []
    for r in cells[cells[contract.OUTCOME].isin(contract.RAN)].itertuples():
        s = sig[sig["run_id"] == r.run_id].pivot_table(index="layer_index", columns="stat", values="value")
        if s.empty or r.activation not in meanfield.PHI or not np.isfinite(r.init_scale):
            continue
        s = s.sort_index()
        rms, grad = s["rms"].to_numpy(), s["backprop_rms"].to_numpy()
        pred = meanfield.propagate(
            r.activation, float(r.init_scale), meanfield.q_from_rms(r.activation, rms[0]), len(rms)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = float(np.exp(np.mean(np.log((grad[:-1] / grad[1:]) ** 2))))
        rows.append(
            {
                "run_id": r.run_id,
                "model": r.model,
                "activation": r.activation,
                "sigma_w2": float(r.init_scale),
                "seed": r.seed,
                "layers": len(rms),
                "rate": rate,
                "rate_predicted": float(np.exp(np.mean(np.log(pred["chi"][1:])))),
                "rms_last": float(rms[-1]),
                "rms_last_predicted": float(pred["rms"][-1]),
            }
        )
    return pd.DataFrame(rows)


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (model, activation, σ_w²): n seeds, the measured rate's mean and 95 % t interval, the
    predicted rate, their ratio; the last layer's RMS measured (geometric mean) and predicted."""
    rows = []
    for (model, act, sw2), g in runs.groupby(["model", "activation", "sigma_w2"], sort=True):
        n, mean, lo, hi = stats.t_interval(g["rate"])
        pred = float(np.exp(np.mean(np.log(g["rate_predicted"]))))
        rms = float(np.exp(np.mean(np.log(g["rms_last"]))))
        rms_pred = float(np.exp(np.mean(np.log(g["rms_last_predicted"]))))
        rows.append(
            {
                "model": model,
                "activation": act,
                "sigma_w2": sw2,
                "n": n,
                "rate": mean,
                "ci_low": lo,
                "ci_high": hi,
                "rate_predicted": pred,
                "rate_ratio": mean / pred,
                "rate_ok": bool(abs(mean / pred - 1) <= RATE_TOLERANCE),
                "interval_holds_prediction": bool(lo <= pred <= hi) if np.isfinite(lo) else None,
                "test": test_of(model, act, sw2),
                "rms_last": rms,
                "rms_last_predicted": rms_pred,
                "rms_ratio": rms / rms_pred,
                "rms_ok": bool(1 / FORWARD_TOLERANCE <= rms / rms_pred <= FORWARD_TOLERANCE),
            }
        )
    return pd.DataFrame(rows)


def _md(t: pd.DataFrame) -> str:
    header = [
        "model",
        "activation",
        "σ_w²",
        "seeds",
        "gradient rate per layer, measured (95 % t)",
        "predicted χ",
        "ratio",
        "χ inside the interval",
        f"within ±{RATE_TOLERANCE:.0%}",
        "last-layer RMS measured / predicted",
        f"within ×{FORWARD_TOLERANCE}",
    ]
    rows = []
    for r in t.itertuples():
        ci = f" [{r.ci_low:.3g}, {r.ci_high:.3g}]" if np.isfinite(r.ci_low) else ""
        rows.append(
            (
                r.model,
                r.activation,
                f"{r.sigma_w2:g}",
                r.n,
                f"{r.rate:.4g}{ci}",
                f"{r.rate_predicted:.4g}",
                f"{r.rate_ratio:.3f}",
                {True: "yes", False: "no"}.get(r.interval_holds_prediction, "—"),
                "yes" if r.rate_ok else "no",
                f"{r.rms_last:.3g} / {r.rms_last_predicted:.3g} = {r.rms_ratio:.3f}",
                "yes" if r.rms_ok else "no",
            )
        )
    return md_table(header, rows)


def profiles(cells: pd.DataFrame, signal: pd.DataFrame, stat: str) -> plt.Figure | None:
    """`stat` (rms or backprop_rms) against layer at initialisation: measured geometric mean over
    seeds (points) and the mean-field prediction (lines; for the gradient, scaled to the measured
    last layer), a panel per (model, activation), a colour per σ_w²."""
    sig = signal[(signal["phase"] == "init") & (signal["stat"] == stat)]
    if sig.empty:
        return None
    panels = sorted(sig.groupby(["model", "activation"]).groups)
    scales = sorted(sig["init_scale"].dropna().unique())
    pal = colors(scales, "viridis")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.4), squeeze=False, layout="constrained")
    for ax, (model, act) in zip(axes[0], panels):
        for sw2 in scales:
            g = sig[(sig["model"] == model) & (sig["activation"] == act) & (sig["init_scale"] == sw2)]
            if g.empty or act not in meanfield.PHI:
                continue
            m = np.exp(np.log(g["value"]).groupby(g["layer_index"]).mean())
            ax.plot(m.index, m.values, "o", ms=3, color=pal[sw2], label=f"σ_w² {sw2:g}")
            first = g[g["layer_index"] == g["layer_index"].min()]
            rms1 = signal[(signal["run_id"].isin(first["run_id"])) & (signal["stat"] == "rms")]
            rms1 = rms1[rms1["layer_index"] == rms1["layer_index"].min()]["value"]
            pred = meanfield.propagate(act, sw2, meanfield.q_from_rms(act, float(np.exp(np.log(rms1).mean()))), len(m))
            if stat == "rms":
                line = pred["rms"]
            else:  # dL/dh_l = (product of χ above l) × the last layer's, in RMS
                chi = np.append(pred["chi"][1:], 1.0)
                line = m.values[-1] * np.sqrt(np.cumprod(chi[::-1])[::-1])
            ax.plot(m.index, line, "-", lw=1, color=pal[sw2])
        ax.set_yscale("log")
        ax.set(title=f"{model}, {act}", xlabel="hidden layer (input → output)")
    axes[0, 0].set_ylabel("RMS activation output" if stat == "rms" else "RMS of dL/dh (back-propagated)")
    axes[0, -1].legend(fontsize=7, title="points: measured\nlines: mean field", title_fontsize=7)
    return fig


def chaos(runs: pd.DataFrame) -> plt.Figure | None:
    """The measured per-layer gradient rate against σ_w² (mean and 95 % t interval over seeds) with
    mean-field χ at the length map's fixed point (tanh: order-to-chaos boundary at σ_w² = 1 for
    σ_b = 0; ReLU: χ = σ_w²/2, He's fixed point at σ_w² = 2)."""
    if runs.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.8), layout="constrained")
    grid = np.geomspace(0.3, 6, 80)
    pal = colors(["tanh", "relu"])
    for act in sorted(runs["activation"].unique()):
        fixed = [meanfield.chi_at_fixed_point(act, sw2) for sw2 in grid]
        ax.plot(grid, fixed, "-", color=pal.get(act), lw=1, label=f"{act}: χ at the length map's fixed point")
        for marker, (model, g) in zip("os", runs[runs["activation"] == act].groupby("model")):
            t = g.groupby("sigma_w2")["rate"].apply(lambda v: stats.t_interval(v))
            x = np.array(t.index)
            mean = np.array([v[1] for v in t])
            err = np.array([[v[1] - v[2], v[3] - v[1]] for v in t]).T
            ax.errorbar(x, mean, yerr=np.nan_to_num(err), fmt=marker, ms=4, color=pal.get(act), label=f"{act} {model}")
    ax.axhline(1.0, color="0.4", ls="--", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="σ_w² (weights N(0, σ_w² / fan_in))", ylabel="gradient rate per layer")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.set_xticks(sorted(runs["sigma_w2"].unique()))
    ax.set_yticks([0.25, 0.5, 1, 2])
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)
    return fig


def _outside(t: pd.DataFrame, outside: pd.DataFrame) -> str:
    if outside.empty:
        return "The prediction lies inside every measured 95 % interval. "
    rows = outside.itertuples()
    said = ", ".join(f"{r.model} {r.activation} σ_w² {r.sigma_w2:g} (ratio {r.rate_ratio:.3f})" for r in rows)
    quiet = int(outside["rate_ok"].sum())
    return (
        f"Mean-field χ lies outside the measured 95 % interval of the gradient rate in {len(outside)} of {len(t)} "
        f"settings (rows, not tests): {said}; {quiet} of them are within the ±{RATE_TOLERANCE:.0%} tolerance, "
        "which does not see a deviation that small however well it is measured. "
    )


@register("signal_propagation")
def signal_propagation(s, view):
    runs = per_run(s.cells, s.signal)
    t = table(runs) if len(runs) else pd.DataFrame()
    ok = int((t["rate_ok"] & t["rms_ok"]).sum()) if len(t) else 0
    head = "No run recorded the signal probe. "
    if len(t):
        tests = t.groupby("test")
        both = tests.apply(lambda g: bool((g["rate_ok"] & g["rms_ok"]).all()), include_groups=False)
        rate = tests["rate_ok"].all()
        fwd = tests["rms_ok"].all()
        outside = t[t["interval_holds_prediction"] == False]  # noqa: E712 (None: one seed)
        spread, rate_spread = rescaling_spread(runs), rescaling_spread(runs, "rate")
        head = (
            f"{ok} of {len(t)} settings within both tolerances (fixed before the first run: gradient rate within "
            f"±{RATE_TOLERANCE:.0%} of mean-field χ, last-layer RMS within a factor {FORWARD_TOLERANCE}). "
            f"As independent tests: {int(both.sum())} of {len(both)} within both, the gradient rate in "
            f"{int(rate.sum())} of {len(rate)}, the forward RMS in {int(fwd.sum())} of {len(fwd)}. "
            "A ReLU model's σ_w² rows count once: at one seed they are the same weights rescaled (ReLU is "
            "positively homogeneous and the biases start at zero)"
            + (
                f": measured/predicted forward RMS per seed agrees across σ_w² to {spread:.1e} (relative), and "
                f"the gradient rate's to {rate_spread:.1%} (near-duplicates: only the softmax at the top sees "
                "logits of another scale)"
                if np.isfinite(spread)
                else ""
            )
            + "; the tanh rows of one model share their seeds' draws too, but tanh is not homogeneous, so each σ_w² "
            "is its own test. " + _outside(t, outside)
        )
    return [
        Figure(
            "signal_table_chaos",
            "Gradient rate per layer against σ_w²: measured and mean-field (order to chaos)",
            lambda: chaos(runs),
            head + "Rate: the factor by which the mean squared back-propagated gradient grows from one hidden "
            "layer to the one below it (below 1: vanishing, above 1: exploding), geometric mean over the "
            "layers. Predicted (table): mean-field χ^l = σ_w² E[φ'(z^l)²] along the length map from each "
            "run's first layer; the curves are χ at the map's fixed point (an infinitely deep network: tanh at "
            "σ_w² = 1 approaches it only slowly, as q^l → 0). The order-to-chaos boundary χ = 1 is at σ_w² = 1 "
            "for tanh and σ_w² = 2 (He) for ReLU.\n\n" + (_md(t) if len(t) else ""),
        ),
        Figure(
            "signal_forward",
            "Forward signal through depth at initialisation",
            lambda: profiles(s.cells, s.signal, "rms"),
            "RMS of each hidden layer's activation output (geometric mean over seeds) and the length map "
            "q^{l+1} = σ_w² E[φ(√q^l z)²] iterated from the measured first layer.",
        ),
        Figure(
            "signal_backward",
            "Back-propagated gradients through depth at initialisation",
            lambda: profiles(s.cells, s.signal, "backprop_rms"),
            "RMS of dL/dh_l (geometric mean over seeds) and mean field's product of χ, anchored at the last "
            "hidden layer.",
        ),
    ]
