"""The report's one style: seaborn's colorblind palette for categories (`colors`, `palette`), viridis
for layer index, the verdicts' colours and marks, the figure grid and legend, and the gradient-ratio
helpers (limits, zones, lines) that several figures share. Public: every section draws with them.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from study import verdicts  # noqa: E402

MARK = {"diverged": "DIV", "failed": "FAIL", "running": "RUN", "missing": "—"}

VERDICT_COLORS = {
    "vanishing": "#0072B2",
    "exploding": "#D55E00",
    "healthy": "#009E73",
    "unknown": "#999999",
    "collapsed": "#CC79A7",
    "died": "#000000",
    "stalled": "#E69F00",
    "slow": "#56B4E9",
    "diverged": "#D55E00",
}

VERDICT_MARK = {
    "diverged": "div",
    "exploding": "exp",
    "vanishing": "van",
    "collapsed": "col",
    "died": "died",
    "stalled": "stall",
    "slow": "slow",
}  # healthy and unknown carry no mark


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 160, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def layer_colorbar(fig, axes, top: int):
    """A discrete colour scale for layer index 1..top (integer ticks)."""
    norm = plt.Normalize(1, max(2, top))
    cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes, label="layer index", shrink=0.8)
    cb.ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    return norm


def integer_x(ax):
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def colors(order, cmap: str = "colorblind") -> dict:
    """The report's one palette: a colour per value, in the given order (seaborn's colorblind
    palette for categories; a sequential map such as viridis for ordered values)."""
    order = list(order)
    return dict(zip(order, sns.color_palette(cmap, len(order))))


def palette(names) -> dict[str, tuple]:
    """`colors` of the distinct values as text, sorted."""
    return colors(sorted(set(map(str, names))))


def legend(fig, axes, title: str) -> None:
    """One legend for the figure, outside the panels on the right (not inside a panel)."""
    handles, labels = [], []
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
        if ax.get_legend():
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title=title, frameon=False)


def subplots_grid(n: int, ncols: int | None = None, size=(3.6, 3.0), sharey=True):
    ncols = ncols or min(n, 5)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, sharey=sharey, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def ratio_limits(cells: pd.DataFrame, vanishing_below: float, exploding_above: float) -> tuple[float, float]:
    """Log-axis limits holding every positive finite first/last ratio and both verdict zones (the
    same for all panels; a ratio of exactly 0, from gradients that underflow, is drawn at the
    floor by `ratio_lines`)."""
    both = cells[[verdicts.RATIO_INIT, verdicts.RATIO_FINAL]].to_numpy(dtype=float).ravel()
    shown = both[np.isfinite(both) & (both > 0)]
    lo = min(shown.min() / 3 if len(shown) else 1.0, vanishing_below / 10)
    # two decades of room below every real value for the ratios of exactly 0
    return (lo / 100 if (both == 0).any() else lo, max(shown.max() * 3 if len(shown) else 1.0, exploding_above * 10))


def ratio_lines(ax, s: pd.DataFrame, color, label: str, lo: float) -> bool:
    """One series of median first/last ratios against depth (the index of `s`): last epoch solid
    with dots, initialisation dashed with crosses. A ratio of exactly 0 (the first layer's gradient
    underflowed) has no place on a log axis: it is drawn just above the axis floor `lo` with a
    downward triangle. Returns whether any was."""
    zero = False
    for col, style, marker, alpha, lab in (
        (verdicts.RATIO_FINAL, "-", "o", 1.0, label),
        (verdicts.RATIO_INIT, "--", "x", 0.7, None),
    ):
        v, floor = s[col], lo * 2
        z = (v == 0).to_numpy()
        ax.plot(s.index, v.where(~z, floor), style, marker=marker, color=color, alpha=alpha, label=lab, ms=4)
        if z.any():
            ax.plot(s.index[z], [floor] * int(z.sum()), "v", color=color, alpha=alpha, ms=9)
            zero = True
    return zero


def with_ratio(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with a depth and at least one of the two ratios (at initialisation it is undefined,
    NaN, when both layers' gradients are 0; the last epoch's may still be known)."""
    return cells.dropna(subset=["depth"]).dropna(subset=[verdicts.RATIO_INIT, verdicts.RATIO_FINAL], how="all")


def ratio_zones(ax, lo: float, hi: float, vanishing_below: float, exploding_above: float, label: bool) -> None:
    """Shade the vanishing and exploding zones of a ratio panel (named in the legend when `label`)
    and fix its y limits."""
    ax.axhspan(
        lo,
        vanishing_below,
        color=VERDICT_COLORS["vanishing"],
        alpha=0.12,
        lw=0,
        label=f"vanishing (< {vanishing_below:g})" if label else None,
    )
    ax.axhspan(
        exploding_above,
        hi,
        color=VERDICT_COLORS["exploding"],
        alpha=0.12,
        lw=0,
        label=f"exploding (> {exploding_above:g})" if label else None,
    )
    ax.set_ylim(lo, hi)


def ratio_legend_entries(ax, zero: bool) -> None:
    ax.plot([], [], "k-", label="last epoch")
    ax.plot([], [], "k--", label="initialisation")
    if zero:
        ax.plot([], [], "kv", ms=8, ls="", label="ratio exactly 0 (underflow)")
