"""Report section of `he_2015_fig2`: He et al. (2015), Fig. 2 at CPU size (a deep plain ReLU MLP at
22 and 30 hidden layers, their "Xavier" against their init): the steps each seed needs to converge,
and the two claims decided by the rule fixed in the preset's `criteria`, paired by seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from study import contract, verdicts
from study.report import charts
from study.report.md import md_table
from study.report.sections.registry import Figure, criteria, register
from study.report.sections.reproductions import _claims, _losses

FIG2_DEFAULTS = {"reach_below": 0.9}  # converged: an epoch's mean training loss <= this × ln K
HE, XAVIER = "he_normal", "lecun_normal"


def steps_to_converge(epochs: pd.DataFrame, cells: pd.DataFrame, reach_below: float) -> pd.Series:
    """Per run: the steps taken by the end of the first epoch whose mean training loss is at most
    `reach_below` × ln K (K classes); NaN if no epoch is (resolution: an epoch)."""
    loss = epochs[epochs["metric"] == "train/loss"].sort_values(["run_id", "epoch"])
    info = cells.set_index("run_id")
    out = {}
    for run, g in loss.groupby("run_id"):
        if run not in info.index:
            continue
        k = float(info.at[run, "num_classes"]) if "num_classes" in info else 10.0
        chance = verdicts.chance_loss(k if np.isfinite(k) else 10.0)  # ln K
        spe = int(g["steps_per_epoch"].iloc[0]) if "steps_per_epoch" in g else 1
        hit = g[g["value"] <= reach_below * chance]
        out[run] = float((int(hit["epoch"].iloc[0]) + 1) * spe) if len(hit) else np.nan
    return pd.Series(out, dtype=float)


def fig2_table(c: pd.DataFrame) -> pd.DataFrame:
    """Per depth and init: runs, seeds that converged, each seed's steps to converge (seed order),
    the mean final training loss and test accuracy."""
    rows = []
    for (depth, init), g in c.groupby(["depth", "init"]):
        g = g.sort_values("seed")
        rows.append(
            {
                "depth": int(depth),
                "init": str(init),
                "runs": len(g),
                "converged": int(g["steps_to"].notna().sum()),
                "steps": ", ".join("never" if not np.isfinite(v) else f"{v:,.0f}" for v in g["steps_to"]),
                "last_loss": float(g["last_loss"].mean()),
                "test": float(g["test/accuracy"].mean()),
                "test_range": f"{g['test/accuracy'].min():.3f}–{g['test/accuracy'].max():.3f}",
            }
        )
    return pd.DataFrame(rows)


def claims(c: pd.DataFrame, reach: float) -> list[tuple[str, str, str, bool | None]]:
    """The two claims, each decided by its rule; paired by seed (the two inits of a seed see the
    same data order)."""
    rows = []
    depths = sorted(c["depth"].unique())
    rule = f"a seed converges at the first epoch with mean training loss ≤ {reach:g} × ln K"
    for depth in depths:
        d = c[c["depth"] == depth]
        he = d[d["init"] == HE].set_index("seed")["steps_to"]
        xa = d[d["init"] == XAVIER].set_index("seed")["steps_to"]
        seeds = he.index.intersection(xa.index)
        if not len(seeds):
            continue
        he, xa = he[seeds], xa[seeds]
        earlier = int(((he < xa) | (he.notna() & xa.isna())).sum())
        measured = (
            f"converged: {XAVIER} {int(xa.notna().sum())}/{len(seeds)}, {HE} {int(he.notna().sum())}/{len(seeds)}; "
            f"{HE} first in {earlier}/{len(seeds)} seeds"
        )
        if depth == min(depths):
            rows.append(
                (
                    f'Fig. 2: at {depth} layers both converge, theirs earlier than "Xavier"',
                    f"both converge in every seed and {HE} first in every seed, paired by seed ({rule})",
                    measured,
                    bool(xa.notna().all() and he.notna().all() and earlier == len(seeds)),
                )
            )
        else:
            rows.append(
                (
                    f'Fig. 3 (as an MLP): at {depth} layers "Xavier" never converges, theirs does',
                    f"{XAVIER} converges in no seed within the budget, {HE} in every seed ({rule})",
                    measured,
                    bool(xa.isna().all() and he.notna().all()),
                )
            )
    return rows


@register("he_2015_fig2")
def he_2015_fig2(s, view):
    rules, said = criteria(s.info, FIG2_DEFAULTS)
    reach = float(rules["reach_below"])
    c = s.cells[s.cells[contract.OUTCOME].isin(contract.RAN)].copy()
    e = s.epochs
    c["steps_to"] = c["run_id"].map(steps_to_converge(e, c, reach))
    c["last_loss"] = c["run_id"].map(_losses(e)["last"])
    t = fig2_table(c) if len(c) else pd.DataFrame()
    rows = claims(c, reach) if len(c) else []
    table = md_table(
        [
            "depth",
            "init",
            "seeds that converge",
            "steps to converge (seeds in order)",
            "final training loss (mean)",
            "test accuracy (mean; range)",
        ],
        [
            (r.depth, r.init, f"{r.converged}/{r.runs}", r.steps, f"{r.last_loss:.3f}", f"{r.test:.3f}; {r.test_range}")
            for r in t.itertuples()
        ],
    )
    metrics = [("train/loss", "training loss"), ("val/accuracy", "validation accuracy")]
    converged = c.set_index("run_id")["steps_to"].notna()
    return [
        Figure(
            "he_fig2_curves",
            "Training curves by initialisation (their Fig. 2), a panel per depth",
            lambda: charts.curves_vs(e, "init", "depth", metrics, trained=converged),
            (_claims(rows) + "\n\n" if rows else "")
            + (table + "\n\n" if len(t) else "")
            + f"Rules from {said}. Steps to converge: the steps at the end of the first epoch whose mean "
            f"training loss is at most {reach:g} × ln K (resolution: one epoch); never: not within the "
            "budget. Dashed curves: seeds that never converged.",
        )
    ]
