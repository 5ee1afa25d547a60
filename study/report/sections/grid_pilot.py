"""Report section of the `grid_pilot` preset: the learning rate of each optimizer of the default grid,
chosen on validation loss. For each optimizer, the `optimizer.lr_scale` (a multiple of its default
learning rate) whose final validation loss, averaged over the pilot's arms, is lowest; a run that
diverged or failed counts as worse than any finite loss. The chosen scales are what
conf/experiment/grid.yaml commits as `tuned_lr_scale` (the caption prints the block to paste).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from study import contract
from study.report.sections.registry import Figure, register
from study.report.style import colors


def choose(cells: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer and scale: the mean over arms of the final validation loss (inf where any arm
    diverged, failed or is missing), the effective learning rate, and whether it is the chosen one."""
    c = cells.assign(loss=np.where(cells[contract.OUTCOME] == contract.FINISHED, cells["val/loss"], np.inf))
    c["loss"] = c["loss"].fillna(np.inf)
    g = c.groupby(["optimizer", "lr_scale"], as_index=False).agg(loss=("loss", "mean"), lr=("lr", "first"))
    g["chosen"] = False
    for _, sub in g.groupby("optimizer"):
        finite = sub[np.isfinite(sub["loss"])]
        if len(finite):
            g.loc[finite["loss"].idxmin(), "chosen"] = True
    return g.sort_values(["optimizer", "lr_scale"]).reset_index(drop=True)


def figure(cells: pd.DataFrame, chosen: pd.DataFrame) -> plt.Figure | None:
    """Final validation loss against the learning-rate scale, a panel per optimizer, a line per arm;
    the chosen scale starred."""
    if cells.empty:
        return None
    opts = sorted(cells["optimizer"].unique())
    arms = sorted(cells["activation"].unique())
    pal = colors(arms)
    fig, axes = plt.subplots(1, len(opts), figsize=(3.8 * len(opts), 3.4), squeeze=False, layout="constrained")
    for ax, opt in zip(axes[0], opts):
        sub = cells[cells["optimizer"] == opt]
        for arm, g in sub.groupby("activation"):
            g = g.sort_values("lr_scale")
            ax.plot(g["lr_scale"], g["val/loss"], "o-", ms=4, color=pal[arm], label=arm)
        best = chosen[(chosen["optimizer"] == opt) & chosen["chosen"]]
        for r in best.itertuples():
            ax.plot([r.lr_scale], [r.loss], "*", ms=16, color="k", label=f"chosen ×{r.lr_scale:g} (lr {r.lr:.3g})")
        ax.set(xscale="log", title=opt, xlabel="optimizer.lr_scale (× default learning rate)")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("final validation loss (diverged: not drawn)")
    return fig


def snippet(chosen: pd.DataFrame) -> str:
    picks = chosen[chosen["chosen"]]
    return "tuned_lr_scale: {" + ", ".join(f"{r.optimizer}: {r.lr_scale:g}" for r in picks.itertuples()) + "}"


@register("grid_pilot")
def grid_pilot(s, view):
    c = s.cells
    chosen = choose(c)
    scales = sorted(chosen["lr_scale"].unique())
    parts = []
    for opt, sub in chosen.groupby("optimizer"):
        pick = sub[sub["chosen"]]
        losses = ", ".join(f"×{r.lr_scale:g} {r.loss:.4g}" for r in sub.itertuples())
        if pick.empty:
            parts.append(f"{opt}: no scale trained without diverging ({losses})")
            continue
        p = pick.iloc[0]
        edge = " — at the edge of the tried range: extend it" if p["lr_scale"] in (scales[0], scales[-1]) else ""
        parts.append(f"{opt}: ×{p['lr_scale']:g} = learning rate {p['lr']:.3g}{edge} (mean validation loss: {losses})")
    return [
        Figure(
            "pilot_val_loss",
            "Final validation loss against the learning rate, per optimizer",
            lambda: figure(c, chosen),
            "Chosen per optimizer (lowest mean final validation loss over the arms; inf = an arm diverged): "
            + "; ".join(parts)
            + f".\n\nconf/experiment/grid.yaml commits: `{snippet(chosen)}`. One seed per cell.",
        )
    ]
