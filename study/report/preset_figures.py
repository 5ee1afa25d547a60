"""Plotting functions of the presets' own report sections (pure: tidy DataFrame in, Figure out).

Each answers one preset's question; they share the style and helpers of `figures`.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study import verdicts
from study.report import stats
from study.report.figures import (
    _grid,
    _integer_x,
    _layer_colorbar,
    _legend,
    _ratio_legend_entries,
    _with_ratio,
    palette,
    ratio_limits,
    ratio_lines,
    ratio_zones,
)


def batch_order(values) -> list[str]:
    """Batch sizes as labels, stochastic first, full batch last."""
    return sorted(set(map(str, values)), key=lambda b: float("inf") if b == "full" else float(b))


def curves_vs(
    epochs: pd.DataFrame, hue: str, facet: str, metrics: list[tuple[str, str]], hue_order=None, x: str = "epoch"
) -> plt.Figure | None:
    """Per-epoch curves: a row per (metric, label), a column per value of `facet`, a line per
    value of `hue`: the mean over seeds, and with several seeds each seed as a thin line and the
    95 % t interval of the mean as a band. `x` is `epoch` or `time/elapsed_s` (wall time)."""
    e = epochs[np.isfinite(epochs["value"])].copy()
    facets = sorted(e[facet].dropna().unique(), key=str)
    if e.empty or not facets:
        return None
    e[hue] = e[hue].astype(str)
    order = hue_order or sorted(e[hue].unique())
    pal = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, axes = plt.subplots(
        len(metrics),
        len(facets),
        figsize=(3.8 * len(facets), 2.9 * len(metrics)),
        squeeze=False,
        sharex="col",
        layout="constrained",
    )
    wide = e.pivot_table(index=["run_id", hue, facet, "epoch"], columns="metric", values="value").reset_index()
    wide["epoch"] = wide["epoch"] + 1
    several = False
    for r, (metric, label) in enumerate(metrics):
        for c, f in enumerate(facets):
            ax = axes[r, c]
            sub = wide[wide[facet] == f]
            if metric not in sub or (x != "epoch" and x not in sub):
                ax.set_visible(False)
                continue
            cols = [metric, x] if x != "epoch" else [metric]
            runs = sub.dropna(subset=[metric])
            mean = runs.groupby([hue, "epoch"], as_index=False)[cols].mean()
            band = runs.groupby([hue, "epoch"])[metric].agg(stats.errorbar).rename("band")
            mean = mean.join(band, on=[hue, "epoch"])
            for h in order:
                m = mean[mean[hue] == h]
                if not len(m):
                    continue
                ax.plot(m[x], m[metric], "-o", ms=3, color=pal[h], label=h)
                seeds = runs[runs[hue] == h]
                if seeds["run_id"].nunique() > 1:
                    several = True
                    for _, one in seeds.groupby("run_id"):
                        ax.plot(one[x], one[metric], "-", lw=0.6, alpha=0.45, color=pal[h])
                    lo, hi = zip(*m["band"])
                    ax.fill_between(m[x], lo, hi, color=pal[h], alpha=0.15, lw=0)
            if metric == "train/learning_rate":
                ax.set_yscale("log")
            ax.set(
                title=f"{facet} {f}" if r == 0 else "",
                ylabel=label if c == 0 else "",
                xlabel=("epoch" if x == "epoch" else "wall time (s)") if r == len(metrics) - 1 else "",
            )
            if x == "epoch":
                _integer_x(ax)
    seeds_note = "\n(markers: mean over seeds;\nband: its 95 % t interval;\nthin: each seed)"
    _legend(fig, list(axes.flat), hue + (seeds_note if several else ""))
    fig.suptitle(f"Per-epoch curves by {hue}")
    return fig


def loss_vs_epoch_and_time(epochs: pd.DataFrame, order: list[str]) -> plt.Figure | None:
    """gd_variants: training loss against epochs (left) and against wall time (right), a line per
    batch size, a row per activation."""
    e = epochs[epochs["metric"].isin(["train/loss", "time/elapsed_s"])]
    acts = sorted(e["activation"].unique())
    if e.empty:
        return None
    wide = e.pivot_table(
        index=["run_id", "batch_size", "activation", "epoch"], columns="metric", values="value"
    ).reset_index()
    if "time/elapsed_s" not in wide:
        return None
    wide["epoch"] += 1
    pal = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, axes = plt.subplots(
        len(acts), 2, figsize=(8, 3.0 * len(acts)), squeeze=False, sharey="row", layout="constrained"
    )
    for r, a in enumerate(acts):
        sub = wide[wide["activation"] == a].groupby(["batch_size", "epoch"], as_index=False).mean(numeric_only=True)
        for c, (x, label) in enumerate((("epoch", "epoch"), ("time/elapsed_s", "wall time (s)"))):
            ax = axes[r, c]
            for b in order:
                s = sub[sub["batch_size"] == b]
                ax.plot(s[x], s["train/loss"], "-o", ms=3, color=pal[b], label=f"batch {b}")
            ax.set(xlabel=label, ylabel=f"training loss ({a})" if c == 0 else "", yscale="log")
        _integer_x(axes[r, 0])
    _legend(fig, list(axes.flat), "gradient descent")
    fig.suptitle("Training loss per epoch and per second of training")
    return fig


def grad_noise(steps: pd.DataFrame, cells: pd.DataFrame, order: list[str]) -> plt.Figure | None:
    """gd_variants: the global gradient norm over training (x in epochs, log y) per batch size, and
    its step-to-step jitter over the last epoch (`diag/grad_norm_noise`)."""
    g = steps[(steps["group"] == "global") & (steps["stat"] == "global_norm")].copy()
    if g.empty:
        return None
    g["x"] = g["step"] / g["steps_per_epoch"].astype(float)
    pal = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.3), layout="constrained")
    for b in order:
        s = g[g["batch_size"] == b].groupby("x")["value"].mean()
        a1.plot(s.index, s.values, "-", lw=1, color=pal[b], label=f"batch {b}")
    a1.set(yscale="log", xlabel="epoch", ylabel="global gradient norm ||g||")
    noise = cells.groupby("batch_size")[verdicts.GRAD_NOISE].mean().reindex(order)
    a2.bar(range(len(order)), noise.to_numpy(), color=[pal[b] for b in order])
    a2.set_xticks(range(len(order)), [f"batch {b}" for b in order])
    a2.set(ylabel="step-to-step jitter of log ||g||", xlabel="")
    a2.grid(axis="x", visible=False)
    _legend(fig, [a1], "gradient descent")
    fig.suptitle("Gradient-norm noise across steps")
    return fig


def best_over(cells: pd.DataFrame, axis: str, by: list[str], score: str = "val/accuracy") -> pd.DataFrame:
    """For each group `by`, the row of the `axis` value with the best mean `score` over seeds
    (diverged cells, whose score is missing, never win); columns: by, axis, score, test/accuracy."""
    m = cells.dropna(subset=[score]).groupby([*by, axis], as_index=False)[[score, "test/accuracy"]].mean()
    if m.empty:
        return m
    return m.loc[m.groupby(by)[score].idxmax()].sort_values(by).reset_index(drop=True)


def lr_sensitivity(cells: pd.DataFrame) -> plt.Figure | None:
    """optimizers_tuned: validation accuracy against the learning rate (log x), a line per
    optimizer, a panel per (activation, depth); the best rate of each line is starred."""
    data = cells.dropna(subset=["lr"])
    panels = sorted({(a, d) for a, d in zip(data["activation"], data["depth"])}, key=str)
    if not panels:
        return None
    fig, axes = _grid(len(panels), ncols=min(len(panels), 4))
    pal = palette(data["optimizer"])
    best = best_over(data, "lr", ["optimizer", "activation", "depth"])
    for ax, (a, d) in zip(axes, panels):
        sub = data[(data["activation"] == a) & (data["depth"] == d)]
        m = sub.groupby(["optimizer", "lr"], as_index=False)["val/accuracy"].mean()
        for o, s in m.groupby("optimizer"):
            ax.plot(s["lr"], s["val/accuracy"], "-o", ms=3, color=pal[o], label=o)
            b = best[(best["optimizer"] == o) & (best["activation"] == a) & (best["depth"] == d)]
            ax.plot(b["lr"], b["val/accuracy"], "*", ms=12, color=pal[o], mec="black", mew=0.5)
        ax.set(xscale="log", title=f"{a}, depth {d}", xlabel="learning rate", ylabel="validation accuracy", ylim=(0, 1))
    _legend(fig, axes, "optimizer")
    fig.suptitle("Learning-rate sensitivity (★ best on validation)")
    return fig


def isolation(best: pd.DataFrame) -> plt.Figure | None:
    """optimizers_tuned: the tuning playbook's isolation plot: test accuracy of each optimizer at
    its own best learning rate, a bar per activation, a panel per depth."""
    if best.empty:
        return None
    depths = sorted(best["depth"].dropna().unique())
    fig, axes = _grid(len(depths), sharey=True, size=(5.0, 3.4))
    pal = palette(best["activation"])
    for ax, d in zip(axes, depths):
        sub = best[best["depth"] == d].astype({"activation": str})
        sns.barplot(
            sub,
            x="optimizer",
            y="test/accuracy",
            hue="activation",
            palette=pal,
            ax=ax,
            order=sorted(best["optimizer"].unique()),
        )
        ax.set(title=f"depth {d}", ylim=(0, 1), ylabel="test accuracy (best learning rate)")
        ax.tick_params(axis="x", rotation=30)
    _legend(fig, axes, "activation")
    if len(axes) == 1:  # one panel: its title says it all (a figure title would run into the legend)
        axes[0].set_title(f"At the best learning rate, depth {depths[0]}")
    else:
        fig.suptitle("Optimizers at their best learning rate")
    return fig


def _heatmap_text(v: float, half: float, log: bool) -> str:
    """A heatmap cell's value, with the half-width of its 95 % t interval under it when known."""
    if not np.isfinite(v):
        return "n/a"
    if log:
        return f"{v:.2g}"
    return f"{v:.2f}" + (f"\n±{half:.2f}" if np.isfinite(half) else "")


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
    fig, axes = _grid(
        len(depths), ncols=min(len(depths), 2), size=(0.9 * len(cols) + 2.4, 0.5 * len(acts) + 1.6), sharey=False
    )
    data = cells.assign(**{col: cells[col].astype(str)})
    several = False
    for ax, d in zip(axes, depths):
        values = data[data["depth"] == d].groupby(["activation", col])[value]
        m = values.mean().unstack().reindex(index=acts, columns=cols)
        half = values.agg(stats.half_width).unstack().reindex(index=acts, columns=cols)  # NaN with one seed
        several |= bool(np.isfinite(half.values).any())
        shown = np.log10(m.clip(lower=1e-30)) if log else m
        sns.heatmap(
            shown,
            ax=ax,
            cmap="viridis",
            annot=pd.DataFrame(
                [[_heatmap_text(v, h, log) for v, h in zip(mr, hr)] for mr, hr in zip(m.values, half.values)],
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
        fig.supxlabel("mean over seeds; ±: half-width of its 95 % t interval", fontsize=8)
    return fig


def ratio_by(cells: pd.DataFrame, factor: str, vanishing_below: float, exploding_above: float) -> plt.Figure | None:
    """First/last RMS gradient ratio at initialisation (dashed) and in the last epoch (solid)
    against depth, a line per value of `factor`, a panel per activation; verdict zones shaded."""
    data = _with_ratio(cells).astype({"depth": int, factor: str})
    acts = sorted(data["activation"].unique())
    if not acts:
        return None
    fig, axes = _grid(len(acts), size=(4.8 if len(acts) == 1 else 3.8, 3.2))
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
    _ratio_legend_entries(axes[-1], zero)
    _legend(fig, axes, factor)
    fig.suptitle(f"Gradient ratio by {factor}")
    return fig


def final_weight_norm(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run: the L2 norm of all hidden and output kernels together at the last logged step."""
    w = steps[(steps["group"] == "weight") & (steps["stat"] == "l2")]
    last = w[w["step"] == w.groupby("run_id")["step"].transform("max")]
    return (
        last.groupby("run_id", as_index=False)["value"]
        .apply(lambda v: float(np.sqrt((v**2).sum())))
        .rename(columns={"value": "weight_norm"})
    )


def generalization(cells: pd.DataFrame, norms: pd.DataFrame) -> plt.Figure | None:
    """regularization: train-test accuracy gap (training examples evaluated after training, without
    dropout) and the final weight norm, per regularisation, a bar per activation."""
    data = cells.merge(norms, on="run_id", how="left").dropna(subset=["test/accuracy", "eval_train/accuracy"])
    if data.empty:
        return None
    data = data.assign(
        gap=data["eval_train/accuracy"] - data["test/accuracy"], activation=data["activation"].astype(str)
    )
    order = [r for r in ("none", "l1", "l2", "dropout") if r in set(data["regularization"])] or sorted(
        data["regularization"].unique()
    )
    pal = palette(data["activation"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    for ax, (y, label) in zip(
        axes,
        (
            ("test/accuracy", "test accuracy"),
            ("gap", "train − test accuracy"),
            ("weight_norm", "weight norm ||W|| after training"),
        ),
    ):
        sns.barplot(data, x="regularization", y=y, hue="activation", order=order, palette=pal, ax=ax, errorbar=None)
        ax.set(ylabel=label, xlabel="")
    _legend(fig, list(axes), "activation")
    fig.suptitle("Regularisation: accuracy, generalisation gap and weight norm")
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
    norm = _layer_colorbar(fig, axes.ravel().tolist(), int(a["layer_index"].max()))
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
    norm = _layer_colorbar(fig, axes.ravel().tolist(), int(h["layer_index"].max()))
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


def metrics_vs(cells: pd.DataFrame, x: str, metrics: list[tuple[str, str, bool]]) -> plt.Figure | None:
    """A panel per metric (column, label, log y) against numeric axis `x` (log2 x), a line per activation."""
    data = cells.dropna(subset=[x]).astype({x: float})
    if data.empty:
        return None
    fig, axes = _grid(len(metrics), sharey=False, size=(3.8, 3.1))
    pal = palette(data["activation"])
    xs = sorted(data[x].unique())
    for ax, (m, label, log) in zip(axes, metrics):
        s = data.groupby(["activation", x], as_index=False)[m].mean()
        for a, sub in s.groupby("activation"):
            ax.plot(sub[x], sub[m], "-o", ms=4, color=pal[a], label=a)
        ax.set(xscale="log", yscale="log" if log else "linear", xlabel=x, ylabel=label)
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if log:
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    _legend(fig, axes, "activation")
    depths = sorted(data["depth"].dropna().unique())
    fig.suptitle(f"Against {x}" + (f" at depth {', '.join(map(str, depths))}" if depths else ""))
    return fig
