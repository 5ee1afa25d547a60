"""Plotting functions: tidy DataFrame in, matplotlib Figure out (pure; no I/O, no MLflow).

One style for all: seaborn "colorblind" palette for categories, a sequential map (viridis) for
layer index, labelled axes, log scales where values span decades.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from study import contract, verdicts  # noqa: E402
from study.report import stats  # noqa: E402
from study.report.style import (  # noqa: E402
    MARK,
    VERDICT_MARK,
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


def accuracy_heatmap(cells: pd.DataFrame) -> plt.Figure | None:
    """(a) Final test accuracy, activation × optimizer, one panel per depth; marks non-finished cells."""
    depths = sorted(cells["depth"].dropna().unique())
    acts, opts = sorted(cells["activation"].unique()), sorted(cells["optimizer"].unique())
    if not depths:
        return None
    fig, axes = subplots_grid(
        len(depths), ncols=min(len(depths), 2), size=(0.95 * len(opts) + 2.2, 0.5 * len(acts) + 1.6), sharey=False
    )
    for ax, d in zip(axes, depths):
        sub = cells[cells["depth"] == d]
        acc = (
            sub.groupby(["activation", "optimizer"])["test/accuracy"].mean().unstack().reindex(index=acts, columns=opts)
        )
        sns.heatmap(
            acc,
            ax=ax,
            vmin=0,
            vmax=1,
            cmap="viridis",
            cbar=ax is axes[-1],
            annot=False,
            cbar_kws={"label": "test accuracy"} if ax is axes[-1] else None,
        )
        for i, a in enumerate(acts):
            for j, o in enumerate(opts):
                cell = sub[(sub["activation"] == a) & (sub["optimizer"] == o)]
                outcomes = set(cell[contract.OUTCOME])
                mark = next((MARK[k] for k in MARK if k in outcomes), None)
                v = acc.loc[a, o]
                shown = stats.cell_text(cell, sep=" ")  # k/n where seeds split, else mean ± t half-width
                text = mark if mark and not np.isfinite(v) else (shown + ("*" if mark else "") if shown else "")
                label = cell["verdict"].mode() if "verdict" in cell and len(cell) else pd.Series(dtype=str)
                if len(label) and label.iloc[0] in VERDICT_MARK and text:
                    text += "\n" + VERDICT_MARK[label.iloc[0]]
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if np.isfinite(v) and v < 0.6 else "black",
                )
        ax.set_title(f"depth {d}")
        ax.set_xlabel("optimizer")
        ax.set_ylabel("activation")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle("Final test accuracy and gradient verdict")
    fig.supxlabel(
        "k/n (m): k of n seeds trained, m their mean; else mean ± half-width of its 95 % t interval. "
        "* diverged or not all seeds finished.\nVerdict under the value: "
        + ", ".join(f"{m} {v}" for v, m in VERDICT_MARK.items())
        + "; none: healthy",
        fontsize=8,
    )
    return fig


def accuracy_vs_depth(cells: pd.DataFrame) -> plt.Figure | None:
    """(b) Test accuracy against depth, a line per activation, a panel per optimizer; mean and the
    95 % Student-t interval over seeds when there are several."""
    data = cells.dropna(subset=["test/accuracy", "depth"]).astype({"depth": int})
    opts = sorted(data["optimizer"].unique())
    if not opts:
        return None
    fig, axes = subplots_grid(len(opts))
    pal = palette(cells["activation"])
    several = cells.groupby(["activation", "optimizer", "depth"])["seed"].nunique().max() > 1
    for ax, o in zip(axes, opts):
        sub = data[data["optimizer"] == o]
        sns.lineplot(
            sub,
            x="depth",
            y="test/accuracy",
            hue="activation",
            palette=pal,
            marker="o",
            ax=ax,
            errorbar=stats.errorbar if several else None,  # 95 % t interval over seeds
        )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(data["depth"].unique()), [str(d) for d in sorted(data["depth"].unique())])
        ax.set(title=o, xlabel="depth (conv layers)", ylabel="test accuracy", ylim=(0, 1))
    legend(fig, axes, "activation")
    return fig


def gradient_profile(steps: pd.DataFrame, optimizer: str) -> plt.Figure | None:
    """(c) RMS weight gradient per layer against layer index (log y), at initialisation (top) and
    averaged over the last epoch (bottom); a line per activation, a panel per depth."""
    g = steps[(steps["group"] == "grad") & (steps["stat"] == "rms") & (steps["optimizer"] == optimizer)]
    g = g[g["layer"] != "logits"]
    depths = sorted(g["depth"].unique())
    if not depths:
        return None
    pal = palette(g["activation"])
    fig, axes = plt.subplots(
        2, len(depths), figsize=(3.4 * len(depths), 5.8), squeeze=False, sharey="row", layout="constrained"
    )
    last_epoch = g.groupby("run_id")["epoch"].transform("max")
    for col, d in enumerate(depths):
        for row, (label, sub) in enumerate(
            (("at initialisation", g[g["step"] == 0]), ("last epoch (mean)", g[g["epoch"] == last_epoch]))
        ):
            sub = sub[sub["depth"] == d].groupby(["activation", "layer_index"], as_index=False)["value"].mean()
            ax = axes[row, col]
            sns.lineplot(sub, x="layer_index", y="value", hue="activation", palette=pal, marker="o", ax=ax)
            ax.set_yscale("log")
            ax.set(
                title=f"depth {d}" if row == 0 else "",
                xlabel="layer index (1 = input side)" if row else "",
                ylabel=f"RMS of dL/dW_l, {label}" if col == 0 else "",
            )
            integer_x(ax)
    legend(fig, list(axes.flat), "activation")
    fig.suptitle(f"Weight-gradient profile across layers ({optimizer})")
    return fig


def ratio_vs_depth(cells: pd.DataFrame, vanishing_below: float, exploding_above: float) -> plt.Figure | None:
    """(d) First/last RMS gradient ratio against depth (log y), a line per activation; solid: last
    epoch, dashed: initialisation; vanishing and exploding zones shaded."""
    data = with_ratio(cells).astype({"depth": int})
    opts = sorted(data["optimizer"].unique())
    if not opts:
        return None
    fig, axes = subplots_grid(len(opts))
    pal = palette(cells["activation"])
    lo, hi = ratio_limits(data, vanishing_below, exploding_above)
    zero = False
    for ax, o in zip(axes, opts):
        sub = data[data["optimizer"] == o]
        for a, s in sub.groupby("activation"):
            s = s.groupby("depth")[[verdicts.RATIO_INIT, verdicts.RATIO_FINAL]].median()
            zero |= ratio_lines(ax, s, pal[a], a, lo)
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(data["depth"].unique()), [str(d) for d in sorted(data["depth"].unique())])
        ratio_zones(ax, lo, hi, vanishing_below, exploding_above, ax is axes[-1])
        ax.set(title=o, xlabel="depth (conv layers)", ylabel="first / last RMS gradient")
    ratio_legend_entries(axes[-1], zero)
    legend(fig, axes, "activation")
    fig.suptitle("Gradient ratio by depth")
    return fig


def loss_curves(epochs: pd.DataFrame, depth: int, trained: pd.Series | None = None) -> plt.Figure | None:
    """(e) Training loss per epoch (cross-entropy, linear axis: it spans less than a decade here), a line per
    activation (the mean over its seeds), a panel per optimizer, at one depth. With `trained` (run_id →
    whether the seed trained) the seeds that trained and those that did not are averaged apart: solid
    and dashed lines."""
    e = epochs[(epochs["metric"] == "train/loss") & (epochs["depth"] == depth)].copy()
    e["seeds"] = (
        e["run_id"].map(trained).fillna(True).map({True: "trained", False: "not trained"})
        if trained is not None
        else "trained"
    )
    opts = sorted(e["optimizer"].unique())
    if not opts:
        return None
    fig, axes = subplots_grid(len(opts))
    pal = palette(epochs["activation"])
    e["epoch"] = e["epoch"] + 1
    for ax, o in zip(axes, opts):
        sub = e[(e["optimizer"] == o) & np.isfinite(e["value"])]
        sns.lineplot(
            sub,
            x="epoch",
            y="value",
            hue="activation",
            style="seeds",
            style_order=["trained", "not trained"],
            palette=pal,
            marker="o",
            ax=ax,
            errorbar=None,
        )
        ax.set(title=o, xlabel="epoch", ylabel="training loss")
        integer_x(ax)
    legend(fig, axes, "")  # seaborn's entries carry the subtitles "activation" and "seeds"
    fig.suptitle(f"Training loss at depth {depth}")
    return fig


def saturation(steps: pd.DataFrame, depth: int, optimizer: str) -> plt.Figure | None:
    """(f) Saturation (sigmoid, tanh, softsign) or dead-unit fraction (ReLU family) per layer over
    training, a panel per activation, colour = layer index (Glorot & Bengio 2010, Figs. 2-3)."""
    a = steps[
        (steps["group"] == "act")
        & (steps["stat"].isin(["saturation", "dead_frac"]))
        & (steps["depth"] == depth)
        & (steps["optimizer"] == optimizer)
    ]
    if a.empty:
        return None
    acts = sorted(a["activation"].unique())
    fig, axes = subplots_grid(len(acts), sharey=False)
    norm = layer_colorbar(fig, axes, int(a["layer_index"].max()))
    for ax, act in zip(axes, acts):
        sub = a[a["activation"] == act]
        stat = sub["stat"].iloc[0]
        for idx, s in sub.groupby("layer_index"):
            ax.plot(s["step"], s["value"], color=plt.cm.viridis(norm(idx)), lw=1.2)
        ax.set(
            title=act,
            xlabel="training step",
            ylim=(-0.02, 1.02),
            ylabel="saturated fraction" if stat == "saturation" else "dead-unit fraction",
        )
    fig.suptitle(f"Saturation and dead units per layer (depth {depth}, {optimizer})")
    return fig


def backprop_histograms(hist: pd.DataFrame, depth: int, optimizer: str) -> plt.Figure | None:
    """(g) Histograms of back-propagated gradients dL/dh_l per layer at initialisation, a panel per
    activation (Glorot & Bengio 2010, Fig. 7), on log10 |g| bins shared by every cell."""
    h = hist[
        (hist["quantity"] == "backprop")
        & (hist["epoch"] == 0)
        & (hist["depth"] == depth)
        & (hist["optimizer"] == optimizer)
        & np.isfinite(hist["bin_left"])
    ]
    if h.empty:
        return None
    acts = sorted(h["activation"].unique())
    fig, axes = subplots_grid(len(acts), sharey=False)
    norm = layer_colorbar(fig, axes, int(h["layer_index"].max()))
    filled = h[h["count"] > 0]
    xlim = (filled["bin_left"].min() - 0.5, filled["bin_right"].max() + 0.5) if len(filled) else None
    for ax, act in zip(axes, acts):
        for idx, s in h[h["activation"] == act].groupby("layer_index"):
            frac = s["count"] / max(1, s["count"].sum())
            ax.plot((s["bin_left"] + s["bin_right"]) / 2, frac, color=plt.cm.viridis(norm(idx)), lw=1.2)
        ax.set(title=act, xlabel="log10 |dL/dh_l|", ylabel="fraction of entries", xlim=xlim)
    fig.suptitle(
        f"Back-propagated gradients at initialisation (depth {depth}; shared bins, the outermost "
        "bins also hold the values beyond them)"
    )
    return fig


def gradient_heatmap(steps: pd.DataFrame, depth: int, optimizer: str) -> plt.Figure | None:
    """(h) Layer × step heatmap of the RMS weight gradient (log colour) of the deepest network, a
    panel per activation."""
    g = steps[
        (steps["group"] == "grad")
        & (steps["stat"] == "rms")
        & (steps["depth"] == depth)
        & (steps["optimizer"] == optimizer)
        & (steps["layer"] != "logits")
    ]
    acts = sorted(g["activation"].unique())
    if not acts:
        return None
    fig, axes = subplots_grid(len(acts), sharey=False, size=(3.8, 3.2))
    positive = g["value"][(g["value"] > 0) & np.isfinite(g["value"])]
    vmin, vmax = (np.log10(positive.min()), np.log10(positive.max())) if len(positive) else (-8, 0)
    for ax, act in zip(axes, acts):
        m = g[g["activation"] == act].pivot_table(index="layer_index", columns="step", values="value")
        im = ax.imshow(
            np.log10(m.clip(lower=1e-30).to_numpy()),
            aspect="auto",
            origin="lower",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
            extent=(m.columns.min(), m.columns.max(), m.index.min() - 0.5, m.index.max() + 0.5),
        )
        ax.set(title=act, xlabel="training step", ylabel="layer index (1 = input side)")
        ax.grid(False)
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.colorbar(im, ax=axes, label="log10 RMS of dL/dW_l", shrink=0.8)
    fig.suptitle(f"Weight-gradient RMS by layer and step (depth {depth}, {optimizer})")
    return fig


def forward_signal(signal: pd.DataFrame, collapse_below: float) -> plt.Figure | None:
    """Forward signal through depth at initialisation: each hidden activation's spread across
    examples (per unit, averaged over the layer; log y) against layer index, a line per activation,
    a panel per depth; the median over the cells of an (activation, depth), whose initialisation is
    the same for every optimizer of a seed. The dotted line is the collapse threshold times layer 1."""
    sig = signal[(signal["phase"] == "init") & (signal["stat"] == "spread")]
    depths = sorted(sig["depth"].dropna().unique())
    if not depths:
        return None
    pal = palette(sig["activation"])
    fig, axes = subplots_grid(len(depths), size=(3.6, 3.1))
    for ax, d in zip(axes, depths):
        sub = sig[sig["depth"] == d].groupby(["activation", "layer_index"], as_index=False)["value"].median()
        for a, s in sub.groupby("activation"):
            ax.plot(s["layer_index"], s["value"].clip(lower=1e-30), "-o", ms=3, color=pal[a], label=a)
            ax.plot(s["layer_index"].iloc[[0, -1]], [s["value"].iloc[0] * collapse_below] * 2, ":", color=pal[a], lw=1)
        ax.set(
            yscale="log",
            title=f"depth {d}",
            xlabel="activation layer (1 = input side)",
            ylabel="spread across examples",
        )
        integer_x(ax)
    legend(fig, axes, "activation")
    if len(axes) == 1:  # one panel: its title says it all (a figure title would run into the legend)
        axes[0].set_title(f"Forward signal at init, depth {depths[0]}")
    else:
        fig.suptitle("Forward signal at initialisation")
    fig.supxlabel("dotted: the collapse threshold (collapse_below × layer 1's spread)", fontsize=8)
    return fig
