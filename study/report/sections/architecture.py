"""Report sections of the architecture presets: `init` (initialisation × activation × depth),
`regularization` (L1, L2, dropout), `mitigations` (batch norm, residuals, clipping) and `width`: their
figures and captions with the measured numbers.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study import verdicts
from study.report import charts
from study.report.sections.registry import Figure, cells_table, done, fmt, register  # noqa: F401
from study.report.style import (
    legend,
    palette,
    subplots_grid,
)


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
    legend(fig, list(axes), "activation")
    fig.suptitle("Regularisation: accuracy, generalisation gap and weight norm")
    return fig


def metrics_vs(cells: pd.DataFrame, x: str, metrics: list[tuple[str, str, bool]]) -> plt.Figure | None:
    """A panel per metric (column, label, log y) against numeric axis `x` (log2 x), a line per activation."""
    data = cells.dropna(subset=[x]).astype({x: float})
    if data.empty:
        return None
    fig, axes = subplots_grid(len(metrics), sharey=False, size=(3.8, 3.1))
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
    legend(fig, axes, "activation")
    depths = sorted(data["depth"].dropna().unique())
    fig.suptitle(f"Against {x}" + (f" at depth {', '.join(map(str, depths))}" if depths else ""))
    return fig


def _verdicts_by(c: pd.DataFrame, factor: str) -> str:
    parts = []
    for f, sub in c.groupby(factor):
        counts = sub["verdict"].value_counts()
        parts.append(f"{f}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "; ".join(parts)


@register("init")
def init(s, view):
    c = done(s.cells)
    deep = c[c["depth"] == c["depth"].max()]
    best = deep.groupby(["activation", "init"])["test/accuracy"].mean()
    parts = [f"{a}: {sub.droplevel(0).idxmax()} ({sub.max():.3f})" for a, sub in best.groupby(level=0)]
    return [
        Figure(
            "init_accuracy",
            "Test accuracy by initialisation",
            lambda: charts.axis_heatmap(c, "init"),
            f"Best initialisation per activation at depth {deep['depth'].max()}: " + ", ".join(parts) + ".",
        ),
        Figure(
            "init_ratio",
            "Gradient ratio by initialisation",
            lambda: charts.ratio_by(c, "init", view.lo, view.hi),
            "Verdicts: " + _verdicts_by(c, "init") + ".",
        ),
    ]


@register("regularization")
def regularization(s, view):
    c = done(s.cells)
    norms = final_weight_norm(s.steps) if not s.steps.empty else pd.DataFrame(columns=["run_id", "weight_norm"])
    m = c.merge(norms, on="run_id", how="left")
    m["gap"] = m["eval_train/accuracy"] - m["test/accuracy"]
    g = m.groupby("regularization")[["gap", "weight_norm", "test/accuracy"]].mean()
    parts = [
        f"{r}: gap {v['gap']:.3f}, ||W|| {fmt(v['weight_norm'])}, test {v['test/accuracy']:.3f}"
        for r, v in g.iterrows()
    ]
    return [
        Figure(
            "generalization",
            "Train-test gap and weight norm",
            lambda: generalization(c, norms),
            "Mean over activations: " + "; ".join(parts) + ".",
        )
    ]


@register("mitigations")
def mitigations(s, view):
    c = done(s.cells)
    fixes = []
    for (a, d), sub in c.groupby(["activation", "depth"]):
        plain = sub[sub["mitigation"] == "none"]["verdict"]
        if len(plain) and (plain != "healthy").any():
            healthy = sorted(sub[(sub["mitigation"] != "none") & (sub["verdict"] == "healthy")]["mitigation"].unique())
            fixes.append(
                f"{a} depth {d} ({plain.iloc[0]} without): healthy with {', '.join(healthy) or 'none of them'}"
            )
    key = ["activation", "depth"]
    pair = c[c["mitigation"] == "none"].merge(c[c["mitigation"] == "clipping"], on=key, suffixes=("", "_clip"))
    same = int(
        np.isclose(
            pair[verdicts.RATIO_FINAL], pair["diag/ratio_first_last_final_clip"], rtol=1e-6, equal_nan=True
        ).sum()
    )
    clip = (
        f" Clipping left the final ratio unchanged (its line hides under `none`) in {same} of {len(pair)} "
        "(activation, depth) pairs: training was identical there, so clipping never acted."
        if len(pair)
        else ""
    )
    return [
        Figure(
            "mitigation_ratio",
            "Gradient ratio with each mitigation",
            lambda: charts.ratio_by(c, "mitigation", view.lo, view.hi),
            ("; ".join(fixes) + "." if fixes else "No plain network had a vanishing or exploding verdict.") + clip,
        ),
        Figure(
            "mitigation_accuracy",
            "Test accuracy with each mitigation",
            lambda: charts.axis_heatmap(c, "mitigation"),
            "Clipping rescales the update, not the gradient: the verdict is computed from the raw "
            "gradient, so clipping can only change it through the path training takes.",
        ),
        Figure(
            "mitigation_train_accuracy",
            "Training accuracy (training mode) with each mitigation",
            lambda: charts.axis_heatmap(c, "mitigation", "train/accuracy", label="training accuracy, last epoch"),
            "Accuracy over the last epoch's batches in training mode. Where it is far above the test "
            "accuracy of a batch-norm cell, inference with batch norm's moving statistics lags: " + _bn_lag(c) + ".",
        ),
    ]


def _bn_lag(c: pd.DataFrame) -> str:
    bn = c[c["mitigation"] == "batch_norm"].sort_values(["activation", "depth"])
    return (
        "; ".join(
            f"{r['activation']} depth {r['depth']}: training {r['train/accuracy']:.2f}, train set in "
            f"inference mode {r['eval_train/accuracy']:.2f}, test {r['test/accuracy']:.2f}"
            for _, r in bn.iterrows()
        )
        or "no batch-norm cells"
    )


@register("width")
def width(s, view):
    c = done(s.cells)
    acc = c.groupby(["activation", "width"])["test/accuracy"].mean()
    t = c.groupby("width")["time/epoch_s"].mean()
    metrics = [
        ("test/accuracy", "test accuracy", False),
        ("time/epoch_s", "seconds per epoch", True),
        (verdicts.RATIO_INIT, "first / last RMS gradient (init)", True),
    ]
    return [
        Figure(
            "width_effects",
            "Accuracy, cost and gradient ratio against width",
            lambda: metrics_vs(c, "width", metrics),
            "Test accuracy: "
            + ", ".join(f"{a} w{w} {v:.3f}" for (a, w), v in acc.items())
            + ". Seconds per epoch: "
            + ", ".join(f"w{w} {v:.2f}" for w, v in t.items())
            + ".",
        )
    ]
