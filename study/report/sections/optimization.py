"""Report sections of the optimization presets: `gd_variants` (batch against stochastic against
mini-batch gradient descent), `lr_schedules` and `optimizers_tuned` (each optimizer at its best
learning rate): their figures and captions with the measured numbers.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from study import verdicts
from study.report import charts, collect
from study.report.sections.registry import Figure, cells_table, done, fmt, register  # noqa: F401
from study.report.style import (
    colors,
    integer_x,
    legend,
    palette,
    subplots_grid,
)


def batch_order(values) -> list[str]:
    """Batch sizes as labels, stochastic first, full batch last."""
    return sorted(set(map(str, values)), key=lambda b: float("inf") if b == "full" else float(b))


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
    pal = colors(order)
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
        integer_x(axes[r, 0])
    legend(fig, list(axes.flat), "gradient descent")
    fig.suptitle("Training loss per epoch and per second of training")
    return fig


def grad_noise(steps: pd.DataFrame, cells: pd.DataFrame, order: list[str]) -> plt.Figure | None:
    """gd_variants: the global gradient norm over training (x in epochs, log y) per batch size, and
    its step-to-step jitter over the last epoch (`diag/grad_norm_noise`)."""
    g = steps[(steps["group"] == "global") & (steps["stat"] == "global_norm")].copy()
    if g.empty:
        return None
    g["x"] = g["step"] / g["steps_per_epoch"].astype(float)
    pal = colors(order)
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
    legend(fig, [a1], "gradient descent")
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
    fig, axes = subplots_grid(len(panels), ncols=min(len(panels), 4))
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
    legend(fig, axes, "optimizer")
    fig.suptitle("Learning-rate sensitivity (★ best on validation)")
    return fig


def isolation(best: pd.DataFrame) -> plt.Figure | None:
    """optimizers_tuned: the tuning playbook's isolation plot: test accuracy of each optimizer at
    its own best learning rate, a bar per activation, a panel per depth."""
    if best.empty:
        return None
    depths = sorted(best["depth"].dropna().unique())
    fig, axes = subplots_grid(len(depths), sharey=True, size=(5.0, 3.4))
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
    legend(fig, axes, "activation")
    if len(axes) == 1:  # one panel: its title says it all (a figure title would run into the legend)
        axes[0].set_title(f"At the best learning rate, depth {depths[0]}")
    else:
        fig.suptitle("Optimizers at their best learning rate")
    return fig


@register("gd_variants")
def gd_variants(s, view):
    c, e = done(s.cells), s.epochs
    order = batch_order(c["batch_size"])
    loss = collect.final_epoch(e, "train/loss").groupby("batch_size")["value"].mean()
    t = collect.final_epoch(e, "time/elapsed_s").groupby("batch_size")["value"].mean()
    noise = c.groupby("batch_size")[verdicts.GRAD_NOISE].mean()
    steps = c.groupby("batch_size")["steps_per_epoch"].first()
    parts = [
        f"batch {b} ({int(steps[b]) if b in steps and pd.notna(steps[b]) else '?'} steps/epoch): loss "
        f"{fmt(loss.get(b))} after {fmt(t.get(b))} s"
        for b in order
    ]
    return [
        Figure(
            "gd_loss",
            "Loss against epochs and wall time",
            lambda: loss_vs_epoch_and_time(e, order),
            "Final training loss and training time: " + "; ".join(parts) + ".",
        ),
        Figure(
            "gd_noise",
            "Gradient-norm noise",
            lambda: grad_noise(s.steps, c, order),
            "Step-to-step jitter of log ||g|| (sqrt of half the mean squared change between "
            "consecutive steps, over the last epoch, or the last 10 steps when an epoch has fewer; "
            "slow drift barely counts): " + ", ".join(f"batch {b} {fmt(noise.get(b))}" for b in order) + ".",
        ),
    ]


@register("lr_schedules")
def lr_schedules(s, view):
    c = done(s.cells)
    acc = c.groupby(["optimizer", "schedule"])["test/accuracy"].mean()
    parts = []
    for o, sub in acc.groupby(level=0):
        sub = sub.droplevel(0)
        parts.append(f"{o}: " + ", ".join(f"{k} {v:.3f}" for k, v in sub.items()) + f" (best {sub.idxmax()})")
    metrics = [
        ("train/learning_rate", "learning rate"),
        ("train/loss", "training loss"),
        ("val/accuracy", "validation accuracy"),
    ]
    return [
        Figure(
            "schedule_curves",
            "Learning rate, loss and accuracy per epoch",
            lambda: charts.curves_vs(
                s.epochs, "schedule", "optimizer", metrics, trained=s.cells.set_index("run_id")["trained"]
            ),
            "Test accuracy by schedule: " + "; ".join(parts) + ".",
        )
    ]


@register("optimizers_tuned")
def optimizers_tuned(s, view):
    c = done(s.cells)
    best = best_over(c, "lr", ["optimizer", "activation", "depth"])
    rank = []
    for (a, d), sub in best.groupby(["activation", "depth"]):
        sub = sub.sort_values("test/accuracy", ascending=False)
        rank.append(
            f"{a} depth {d}: "
            + " > ".join(f"{r['optimizer']} ({r['test/accuracy']:.3f} at lr {r['lr']:.2g})" for _, r in sub.iterrows())
        )
    tried = c.dropna(subset=["lr"]).groupby("optimizer")["lr"].agg(["min", "max"])
    edge = sorted(
        {
            f"{r['optimizer']} ({r['activation']}, lr {r['lr']:.2g})"
            for _, r in best.iterrows()
            if r["optimizer"] in tried.index
            and r["lr"] in (tried.loc[r["optimizer"], "min"], tried.loc[r["optimizer"], "max"])
        }
    )
    return [
        Figure(
            "lr_sensitivity",
            "Validation accuracy against learning rate",
            lambda: lr_sensitivity(c),
            "Each optimizer's learning rates are its default times `optimizer.lr_scale`; a missing point "
            "diverged. "
            + (
                f"Best at the edge of the tried range, so the range should be extended: {', '.join(edge)}."
                if edge
                else "Every best rate lies inside the tried range."
            ),
        ),
        Figure(
            "isolation",
            "Optimizers at their best learning rate",
            lambda: isolation(best),
            "Test accuracy at the learning rate with the best validation accuracy: " + "; ".join(rank) + ".",
        ),
    ]
