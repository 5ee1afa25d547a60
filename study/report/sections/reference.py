"""Report section of the `grid_reference` preset: the default grid's cells trained long, ranked by
validation accuracy at the grid's budget (96 steps: read from the same runs' epoch table) and at the
end, side by side. The rule, fixed before running: a run has *levelled off* when its validation loss
changed by less than `LEVEL_TOL` (relative) over its last `LEVEL_EPOCHS` epochs; the rankings'
agreement is Spearman's rank correlation over the cells (one seed per cell: a ranking, no interval).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as st

from study.report.md import md_table
from study.report.sections.registry import Figure, Section, cells_table, register
from study.report.style import colors, legend

BUDGET_STEPS = 96  # the default grid's 3 epochs of 32 steps
LEVEL_EPOCHS, LEVEL_TOL = 5, 0.02


def at_budget_and_end(cells: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per cell: validation accuracy and loss and training loss after BUDGET_STEPS steps and at the
    end, the ranks by validation accuracy (1 = best) at both, and whether it levelled off."""
    rows = []
    for _, c in cells.iterrows():
        e = epochs[epochs["run_id"] == c["run_id"]].pivot_table(index="epoch", columns="metric", values="value")
        if e.empty:
            continue
        spe = int(c["steps_per_epoch"]) if np.isfinite(c.get("steps_per_epoch", np.nan)) else 32
        budget = e.loc[e.index[e.index < max(1, BUDGET_STEPS // spe)]].iloc[-1]  # the epoch ending at step 96
        end = e.iloc[-1]
        tail = e["val/loss"].iloc[-(LEVEL_EPOCHS + 1) :]
        change = abs(tail.iloc[-1] - tail.iloc[0]) / tail.iloc[0] if len(tail) > LEVEL_EPOCHS else np.nan
        rows.append(
            {
                "activation": c["activation"],
                "optimizer": c["optimizer"],
                "lr": c.get("lr", np.nan),
                "steps": int(len(e) * spe),
                "budget_steps": int((budget.name + 1) * spe),
                "val_acc_96": budget.get("val/accuracy", np.nan),
                "train_loss_96": budget.get("train/loss", np.nan),
                "val_acc_end": end.get("val/accuracy", np.nan),
                "train_loss_end": end.get("train/loss", np.nan),
                "test_acc_end": c.get("test/accuracy", np.nan),
                "val_loss_change_last": change,
                "levelled": bool(np.isfinite(change) and change < LEVEL_TOL),
            }
        )
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    t["rank_96"] = t["val_acc_96"].rank(ascending=False, method="min").astype(int)
    t["rank_end"] = t["val_acc_end"].rank(ascending=False, method="min").astype(int)
    return t.sort_values("rank_end").reset_index(drop=True)


def _ranked(g: pd.DataFrame, col: str) -> str:
    """`adam > momentum = sgd`: optimizers in order of `col`, equal values joined by `=`."""
    out = str(g["optimizer"].iloc[0])
    for prev, (_, r) in zip(g[col].iloc[:-1], g.iloc[1:].iterrows()):
        out += (" = " if r[col] == prev else " > ") + str(r["optimizer"])
    return out


def optimizer_orders(t: pd.DataFrame) -> str:
    """Per arm, its optimizers ordered by validation accuracy after the budget and at the end (the
    grid's optimizer claims are claims about the first order; this says whether the second agrees)."""
    parts = []
    for arm, g in t.groupby("activation"):
        order = lambda col, g=g: _ranked(g.sort_values(col, ascending=False, kind="stable"), col)  # noqa: E731
        a, b = order("val_acc_96"), order("val_acc_end")
        parts.append(f"{arm}: {a} → {b}" + (" (same)" if a == b else ""))
    return "Optimizers per arm by validation accuracy, at the budget → at the end: " + "; ".join(parts) + "."


def figure(epochs: pd.DataFrame, spe: int) -> plt.Figure | None:
    """Validation accuracy against training steps, a panel per optimizer, a line per arm; the grid's
    budget marked."""
    e = epochs[epochs["metric"] == "val/accuracy"]
    if e.empty:
        return None
    opts = sorted(e["optimizer"].unique())
    pal = colors(sorted(e["activation"].unique()))
    fig, axes = plt.subplots(
        1, len(opts), figsize=(3.8 * len(opts), 3.2), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, o in zip(axes[0], opts):
        for arm, g in e[e["optimizer"] == o].groupby("activation"):
            g = g.sort_values("epoch")
            ax.plot((g["epoch"] + 1) * spe, g["value"], "-", color=pal[arm], label=arm)
        ax.axvline(BUDGET_STEPS, color="k", ls=":", lw=1)
        ax.set(title=o, xlabel="training step", xscale="log")
    axes[0, 0].set_ylabel("validation accuracy")
    legend(fig, list(axes[0]), f"arm (dotted: the grid's {BUDGET_STEPS} steps)")
    return fig


@register("grid_reference")
def grid_reference(s, view):
    c = s.cells
    t = at_budget_and_end(c, s.epochs)
    spe = int(np.nanmedian(c["steps_per_epoch"])) if "steps_per_epoch" in c and len(c) else 32
    if t.empty:
        return Section([Figure("reference_curves", "Validation accuracy over training", lambda: None, "No runs.")])
    rho = st.spearmanr(t["val_acc_96"], t["val_acc_end"]).statistic if len(t) > 2 else np.nan
    moved = t[(t["rank_96"] - t["rank_end"]).abs() >= 3]
    budget = int(t["budget_steps"].median())
    caption = (
        f"{len(t)} cells, one seed each (seed {', '.join(map(str, sorted(c['seed'].unique())))}): a ranking, "
        f"no interval. Spearman's rank correlation of validation accuracy after {budget} steps and "
        f"after {int(t['steps'].median())}: {rho:.2f}. {int(t['levelled'].sum())} of {len(t)} levelled off "
        f"(validation loss changed < {LEVEL_TOL:.0%} over the last {LEVEL_EPOCHS} epochs). Cells that move "
        "3 or more places: "
        + (
            "; ".join(f"{r.activation} + {r.optimizer} {r.rank_96} → {r.rank_end}" for r in moved.itertuples())
            or "none"
        )
        + ".\n\n"
        + optimizer_orders(t)
    )
    rows = [
        (
            r.activation,
            r.optimizer,
            f"{r.lr:.3g}",
            f"{r.val_acc_96:.3f} ({r.rank_96})",
            f"{r.train_loss_96:.3f}",
            f"{r.val_acc_end:.3f} ({r.rank_end})",
            f"{r.train_loss_end:.3f}",
            f"{r.test_acc_end:.3f}",
            "yes" if r.levelled else f"no ({r.val_loss_change_last:.1%})",
        )
        for r in t.itertuples()
    ]
    header = [
        "arm",
        "optimizer",
        "lr",
        f"val acc at {BUDGET_STEPS} steps (rank)",
        f"train loss at {BUDGET_STEPS}",
        "val acc at the end (rank)",
        "train loss at the end",
        "test acc at the end",
        "levelled off",
    ]
    return Section(
        [Figure("reference_curves", "Validation accuracy over training", lambda: figure(s.epochs, spe), caption)],
        tables=[md_table(header, rows), cells_table(c)],
    )
