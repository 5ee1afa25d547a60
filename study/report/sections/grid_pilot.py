"""Report section of the `grid_pilot` preset: the learning rate of each arm × optimizer × depth of the
default grid, chosen on validation loss, on seeds the grid does not use.

The rule, fixed before running: per arm, optimizer and depth, the `optimizer.lr_scale` (a multiple of
the optimizer's default learning rate) whose final validation loss, averaged over the pilot's seeds,
is lowest; a seed that diverged or failed makes that multiple worse than any finite one. A choice at
the smallest or largest multiple tried is *at the edge*: the range must be widened (rerun with more
multiples; done cells are reused) until every choice is interior. Where no multiple trains (the best
mean loss above `FLAT_ABOVE` × the loss of chance, ln K) the losses carry no information about the
rate: the default ×1 is kept and the table says so. The chosen multiples are what
conf/experiment/grid.yaml commits as `tuned_lr_scale` (the caption prints the block;
tests/test_pilot_rates.py checks the two agree).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from study import contract
from study.report.md import md_table
from study.report.sections.registry import Figure, Section, cells_table, register
from study.report.style import colors

KEYS = ["activation", "optimizer", "depth"]
FLAT_ABOVE = 0.97  # best mean validation loss above this × ln K: no multiple trains


def choose(
    cells: pd.DataFrame, keys: list[str] = KEYS, metric: str = "val/loss", top: str = "edge: widen the range"
) -> pd.DataFrame:
    """Per `keys` (arm, optimizer, depth) and scale: the mean over seeds of the final `metric` (inf
    where a seed diverged, failed or is missing), the seeds, the effective learning rate; per `keys`
    which scale is chosen and why (`note`: interior, edge, or flat; `top` is the note of a choice at
    the largest multiple, for a range whose top is a bound by design)."""
    c = cells.assign(loss=np.where(cells[contract.OUTCOME] == contract.FINISHED, cells[metric], np.inf))
    c["loss"] = c["loss"].fillna(np.inf)
    g = c.groupby([*keys, "lr_scale"], as_index=False).agg(
        loss=("loss", "mean"), seeds=("seed", "nunique"), lr=("lr", "first"), classes=("num_classes", "first")
    )
    g["chosen"], g["note"] = False, ""
    for _, sub in g.groupby(keys):
        finite = sub[np.isfinite(sub["loss"])]
        if not len(finite):
            continue
        best = finite["loss"].idxmin()
        chance = math.log(float(sub["classes"].iloc[0])) if np.isfinite(sub["classes"].iloc[0]) else math.log(10)
        scale = g.at[best, "lr_scale"]
        if g.at[best, "loss"] > FLAT_ABOVE * chance:
            ones = sub.index[sub["lr_scale"] == 1]
            pick, note = (ones[0] if len(ones) else best), "flat: no multiple trains, ×1 kept"
        elif scale == sub["lr_scale"].max():
            pick, note = best, top
        else:
            pick, note = best, "edge: widen the range" if scale == sub["lr_scale"].min() else "interior"
        g.loc[pick, "chosen"], g.loc[pick, "note"] = True, note
    return g.sort_values([*keys, "lr_scale"]).reset_index(drop=True)


def table(chosen: pd.DataFrame) -> dict:
    """arm → optimizer → `d<depth>` → chosen multiple: the block conf/experiment/grid.yaml commits."""
    out: dict = {}
    for r in chosen[chosen["chosen"]].itertuples():
        out.setdefault(r.activation, {}).setdefault(r.optimizer, {})[f"d{int(r.depth)}"] = float(r.lr_scale)
    return out


def snippet(chosen: pd.DataFrame) -> str:
    """`tuned_lr_scale:` as YAML, one line per arm."""
    fmt = lambda v: f"{v:g}"  # noqa: E731
    lines = ["tuned_lr_scale:"]
    for arm, opts in sorted(table(chosen).items()):
        inner = ", ".join(
            f"{o}: {{" + ", ".join(f"{d}: {fmt(v)}" for d, v in sorted(ds.items(), key=lambda kv: int(kv[0][1:]))) + "}"
            for o, ds in sorted(opts.items())
        )
        lines.append(f"  {arm}: {{{inner}}}")
    return "\n".join(lines)


def figure(cells: pd.DataFrame, chosen: pd.DataFrame) -> plt.Figure | None:
    """Final validation loss against the learning-rate multiple: a row per depth, a column per
    optimizer, a line per arm (the mean over seeds; each seed a dot); the chosen multiple starred."""
    if cells.empty:
        return None
    opts, depths = sorted(cells["optimizer"].unique()), sorted(cells["depth"].unique())
    pal = colors(sorted(cells["activation"].unique()))
    fig, axes = plt.subplots(
        len(depths), len(opts), figsize=(3.8 * len(opts), 3.0 * len(depths)), squeeze=False, layout="constrained"
    )
    for i, d in enumerate(depths):
        for j, opt in enumerate(opts):
            ax = axes[i, j]
            sub = cells[(cells["optimizer"] == opt) & (cells["depth"] == d)]
            for arm, g in sub.groupby("activation"):
                m = g.groupby("lr_scale")["val/loss"].mean()
                ax.plot(m.index, m.values, "-", color=pal[arm], label=arm)
                ax.plot(g["lr_scale"], g["val/loss"], "o", ms=3, color=pal[arm])
            best = chosen[(chosen["optimizer"] == opt) & (chosen["depth"] == d) & chosen["chosen"]]
            ax.plot(best["lr_scale"], best["loss"].where(np.isfinite(best["loss"])), "*", ms=13, color="k")
            top = 1.5 * math.log(float(np.nanmax(cells["num_classes"]))) if cells["num_classes"].notna().any() else 3.5
            finite = sub["val/loss"][np.isfinite(sub["val/loss"])]
            if len(finite) and finite.max() > top:  # a blown-up loss would squash the rest: cut at 1.5 ln K
                ax.set_ylim(min(0.0, finite.min()), top)
                ax.text(
                    0.02, 0.97, f"losses above {top:.2f} off the axis", transform=ax.transAxes, fontsize=7, va="top"
                )
            ax.set(
                xscale="log", title=f"{opt}, depth {d}", xlabel="lr_scale (× default)" if i == len(depths) - 1 else ""
            )
            if j == 0:
                ax.set_ylabel("final validation loss")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="arm (★ chosen)", frameon=False)
    return fig


@register("grid_pilot")
def grid_pilot(s, view):
    c = s.cells
    chosen = choose(c)
    rows = []
    for key, sub in chosen.groupby(KEYS):
        pick = sub[sub["chosen"]]
        losses = ", ".join(f"×{r.lr_scale:g} {r.loss:.3f}" for r in sub.itertuples())
        if pick.empty:
            rows.append((*key, "none", "n/a", "every multiple diverged", losses))
            continue
        p = pick.iloc[0]
        rows.append((*key, f"×{p['lr_scale']:g}", f"{p['lr']:.3g}", p["note"], losses))
    edges = sum(r[5].startswith("edge") for r in rows)
    flat = sum(r[5].startswith("flat") for r in rows)
    seeds = sorted(c["seed"].unique())
    figures = [
        Figure(
            "pilot_val_loss",
            "Final validation loss against the learning rate, per optimizer and depth",
            lambda: figure(c, chosen),
            f"Chosen per arm, optimizer and depth on seeds {', '.join(map(str, seeds))} (lowest mean final "
            f"validation loss; inf = a seed diverged): {len(rows)} choices, {len(rows) - edges - flat} interior, "
            f"{edges} at the edge of the tried range, {flat} where no multiple trains (×1 kept). "
            "The `tuned_lr_scale` table this pilot gives (conf/experiment/grid.yaml commits that of the "
            "pilot it names):\n\n```yaml\n" + snippet(chosen) + "\n```",
        )
    ]
    choices = md_table(
        ["arm", "optimizer", "depth", "chosen", "learning rate", "note", "mean val loss per multiple"], rows
    )
    return Section(figures, tables=[choices, cells_table(c)])
