"""Reusable charts of the report sections (pure: tidy DataFrame in, matplotlib Figure out): curves
against a swept axis, heatmaps over two axes, gradient ratios by a factor, activations over training,
back-propagated gradients by layer. They share the style and helpers of `figures`.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study import verdicts
from study.report import stats
from study.report.style import (
    colors,
    integer_x,
    layer_colorbar,
    legend,
    palette,
    ratio_legend_entries,
    ratio_limits,
    ratio_lines,
    ratio_zones,
    subplots_grid,
    with_ratio,
)


def _numeric_first(v) -> tuple:
    """Sort key: numbers in numeric order, then everything else as text."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def curves_vs(
    epochs: pd.DataFrame,
    hue: str,
    facet: str,
    metrics: list[tuple[str, str]],
    hue_order=None,
    x: str = "epoch",
    trained: pd.Series | None = None,
) -> plt.Figure | None:
    """Per-epoch curves: a row per (metric, label), a column per value of `facet`, a line per
    value of `hue`: the mean over seeds, and with several seeds each seed as a thin line and the
    95 % t interval of the mean as a band (3 or more seeds; clipped to the metric's range). With `trained` (run_id →
    whether the seed trained) a line whose seeds split is drawn as two: the seeds that trained
    (solid) and those that did not (dashed), each with its own mean and band, never one mean across
    both. `x` is `epoch` or `time/elapsed_s` (wall time)."""
    e = epochs[np.isfinite(epochs["value"])].copy()
    facets = sorted(e[facet].dropna().unique(), key=_numeric_first)  # width 8 before 16, not after
    if e.empty or not facets:
        return None
    e[hue] = e[hue].astype(str)
    order = hue_order or sorted(e[hue].unique())
    pal = colors(order)
    fig, axes = plt.subplots(
        len(metrics),
        len(facets),
        figsize=((3.8 if len(facets) > 1 else 5.0) * len(facets) + 2.4, 2.9 * len(metrics)),  # + the legend
        squeeze=False,
        sharex="col",
        layout="constrained",
    )
    wide = e.pivot_table(index=["run_id", hue, facet, "epoch"], columns="metric", values="value").reset_index()
    wide["epoch"] = wide["epoch"] + 1
    wide["_trained"] = wide["run_id"].map(trained) if trained is not None else True
    wide["_trained"] = wide["_trained"].fillna(True).astype(bool)
    several = split_any = False
    for r, (metric, label) in enumerate(metrics):
        for c, f in enumerate(facets):
            ax = axes[r, c]
            sub = wide[wide[facet] == f]
            if metric not in sub or (x != "epoch" and x not in sub):
                ax.set_visible(False)
                continue
            cols = [metric, x] if x != "epoch" else [metric]
            runs = sub.dropna(subset=[metric])
            for h in order:
                seeds = runs[runs[hue] == h]
                groups = [(t, g) for t, g in seeds.groupby("_trained")]
                split = len(groups) > 1
                split_any |= split
                for t, g in groups:
                    m = g.groupby("epoch", as_index=False)[cols].mean()
                    style = "-o" if t or not split else "--x"
                    name = h if t or not split else f"{h}, not trained"
                    ax.plot(m[x], m[metric], style, ms=3, color=pal[h], label=name)
                    if g["run_id"].nunique() > 1:
                        several = True
                        for _, one in g.groupby("run_id"):
                            ax.plot(
                                one[x], one[metric], "-" if t or not split else "--", lw=0.6, alpha=0.45, color=pal[h]
                            )
                        if g["run_id"].nunique() >= 3:  # with 2 seeds t(0.975, 1) = 12.7: a band says nothing
                            band = g.groupby("epoch")[metric].agg(stats.errorbar, metric=metric)
                            lo, hi = zip(*band)
                            ax.fill_between(m[x], lo, hi, color=pal[h], alpha=0.15, lw=0)
            if metric == "train/learning_rate":
                ax.set_yscale("log")
            ax.set(
                title=f"{facet} {f}" if r == 0 else "",
                ylabel=label if c == 0 else "",
                xlabel=("epoch" if x == "epoch" else "wall time (s)") if r == len(metrics) - 1 else "",
            )
            if x == "epoch":
                integer_x(ax)
    seeds_note = (
        "\n(markers: mean over seeds;\nband: its 95 % t interval\n(3 or more seeds); thin: each seed)"
        if several
        else ""
    )
    split_note = "\n(dashed: seeds that did not train)" if split_any else ""
    legend(fig, list(axes.flat), hue + seeds_note + split_note)
    fig.suptitle(f"Per-epoch curves by {hue}", x=0.02, ha="left")  # clear of the legend on the right
    return fig


def _heatmap_text(runs: pd.DataFrame, value: str, log: bool) -> str:
    """A heatmap cell's text: stats.cell_text (k/n where seeds split, else the mean and its interval)
    on two lines; on a log colour scale the mean alone."""
    v = runs[value].astype(float).mean() if len(runs) else math.nan
    if not np.isfinite(v):
        return "n/a"
    if log:
        return f"{v:.2g}"
    return stats.cell_text(runs, value, sep="\n")


def axis_heatmap(
    cells: pd.DataFrame, col: str, value: str = "test/accuracy", *, log: bool = False, label: str = "test accuracy"
) -> plt.Figure | None:
    """Mean `value` as a heatmap, activation × `col`, a panel per depth (log10 colour when `log`);
    with several seeds each value carries the half-width of its 95 % t interval (± under it)."""
    depths = sorted(cells["depth"].dropna().unique())
    if not depths:
        return None
    cols = sorted(cells[col].astype(str).unique(), key=lambda v: (v != "none", v))  # the baseline first
    acts = sorted(cells["activation"].unique())
    fig, axes = subplots_grid(
        len(depths), ncols=min(len(depths), 2), size=(0.9 * len(cols) + 2.4, 0.5 * len(acts) + 1.6), sharey=False
    )
    data = cells.assign(**{col: cells[col].astype(str)})
    several = False
    for ax, d in zip(axes, depths):
        at = data[data["depth"] == d]
        m = at.groupby(["activation", col])[value].mean().unstack().reindex(index=acts, columns=cols)
        several |= bool((at.groupby(["activation", col]).size() > 1).any())
        shown = np.log10(m.clip(lower=1e-30)) if log else m
        runs = {k: g for k, g in at.groupby(["activation", col])}
        empty = at.iloc[:0]
        sns.heatmap(
            shown,
            ax=ax,
            cmap="viridis",
            annot=pd.DataFrame(
                [[_heatmap_text(runs.get((a, c), empty), value, log) for c in cols] for a in acts],
                index=m.index,
                columns=m.columns,
            ),
            fmt="",
            vmin=None if log else 0,
            vmax=None if log else 1,
            annot_kws={"fontsize": 8},
            cbar_kws={"label": f"log10 {label}" if log else label},
        )
        ax.set(title=f"depth {d}", xlabel=col, ylabel="activation")
        ax.tick_params(axis="x", rotation=30)
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(f"{label[0].upper() + label[1:]} by activation and {col}")
    if several and not log:
        fig.supxlabel(
            "mean over seeds ± half-width of its 95 % t interval; k/n (m): k of n seeds trained, m their mean",
            fontsize=8,
        )
    return fig


def ratio_by(cells: pd.DataFrame, factor: str, vanishing_below: float, exploding_above: float) -> plt.Figure | None:
    """First/last RMS gradient ratio at initialisation (dashed) and in the last epoch (solid)
    against depth, a line per value of `factor`, a panel per activation; verdict zones shaded."""
    data = with_ratio(cells).astype({"depth": int, factor: str})
    acts = sorted(data["activation"].unique())
    if not acts:
        return None
    fig, axes = subplots_grid(len(acts), size=(4.8 if len(acts) == 1 else 3.8, 3.2))
    pal = palette(data[factor])
    depths = sorted(data["depth"].unique())
    lo, hi = ratio_limits(data, vanishing_below, exploding_above)
    zero = False
    for ax, a in zip(axes, acts):
        for f, s in data[data["activation"] == a].groupby(factor):
            s = s.groupby("depth")[[verdicts.RATIO_INIT, verdicts.RATIO_FINAL]].median()
            zero |= ratio_lines(ax, s, pal[f], f, lo)
        ax.set(yscale="log", title=a, xlabel="depth", ylabel="first / last RMS gradient")
        ax.set_xticks(depths, [str(d) for d in depths])
        ratio_zones(ax, lo, hi, vanishing_below, exploding_above, ax is axes[-1])
    ratio_legend_entries(axes[-1], zero)
    legend(fig, axes, factor)
    fig.suptitle(f"Gradient ratio by {factor}")
    return fig


def activation_over_training(steps: pd.DataFrame, col: str) -> plt.Figure | None:
    """glorot_bengio_2010 Fig. 2: mean (line) and standard deviation (band) of each hidden layer's
    activation over training, a row per activation, a column per value of `col` (initialisation)."""
    a = steps[(steps["group"] == "act") & steps["stat"].isin(["mean", "std"])]
    if a.empty:
        return None
    acts, cols = sorted(a["activation"].unique()), sorted(a[col].astype(str).unique())
    fig, axes = plt.subplots(
        len(acts),
        len(cols),
        figsize=(4.0 * len(cols), 2.8 * len(acts)),
        squeeze=False,
        sharex=True,
        sharey="row",
        layout="constrained",
    )
    norm = layer_colorbar(fig, axes.ravel().tolist(), int(a["layer_index"].max()))
    for r, act in enumerate(acts):
        for c, v in enumerate(cols):
            ax = axes[r, c]
            sub = a[(a["activation"] == act) & (a[col].astype(str) == v)]
            wide = sub.pivot_table(index=["layer_index", "step"], columns="stat", values="value").reset_index()
            for idx, s in wide.groupby("layer_index"):
                color = plt.cm.viridis(norm(idx))
                ax.plot(s["step"], s["mean"], color=color, lw=1.2)
                ax.fill_between(s["step"], s["mean"] - s["std"], s["mean"] + s["std"], color=color, alpha=0.12, lw=0)
            ax.set(
                title=f"{act}, {v}",
                xlabel="training step" if r == len(acts) - 1 else "",
                ylabel="activation mean ± std" if c == 0 else "",
            )
    fig.suptitle("Activation values per hidden layer over training (Glorot & Bengio 2010, Fig. 2)")
    return fig


def backprop_by(hist: pd.DataFrame, col: str, epoch: int = 0) -> plt.Figure | None:
    """glorot_bengio_2010 Fig. 7: histograms of back-propagated gradients dL/dh_l per layer at
    `epoch` (0 = initialisation), a row per activation, a column per value of `col`."""
    h = hist[(hist["quantity"] == "backprop") & (hist["epoch"] == epoch) & np.isfinite(hist["bin_left"])]
    if h.empty:
        return None
    acts, cols = sorted(h["activation"].unique()), sorted(h[col].astype(str).unique())
    fig, axes = plt.subplots(
        len(acts),
        len(cols),
        figsize=(4.0 * len(cols), 2.8 * len(acts)),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    norm = layer_colorbar(fig, axes.ravel().tolist(), int(h["layer_index"].max()))
    filled = h[h["count"] > 0]
    for r, act in enumerate(acts):
        for c, v in enumerate(cols):
            ax = axes[r, c]
            for idx, s in h[(h["activation"] == act) & (h[col].astype(str) == v)].groupby("layer_index"):
                ax.plot(
                    (s["bin_left"] + s["bin_right"]) / 2,
                    s["count"] / max(1, s["count"].sum()),
                    color=plt.cm.viridis(norm(idx)),
                    lw=1.2,
                )
            ax.set(
                title=f"{act}, {v}",
                xlabel="log10 |dL/dh_l|" if r == len(acts) - 1 else "",
                ylabel="fraction" if c == 0 else "",
                xlim=(filled["bin_left"].min() - 0.5, filled["bin_right"].max() + 0.5),
            )
    when = "initialisation" if epoch == 0 else f"epoch {epoch}"
    fig.suptitle(f"Back-propagated gradients per layer at {when} (Glorot & Bengio 2010, Fig. 7)")
    return fig
