"""Seeds to intervals: the mean of a grid cell over its seeds with a 95 % Student-t interval, and
the rule a caption uses to call a difference resolved (the two intervals do not overlap).

Why t and not the bootstrap: with 3 seeds a percentile bootstrap can only return values between the
smallest and largest run, so its "95 %" interval is far too narrow; the t interval assumes the seeds'
results are roughly normal and widens correctly for small n (t(0.975, 2) = 4.30).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st

from study import contract

LEVEL = 0.95
# the axes that can make two runs different cells (the seed never does)
CELL_AXES = (
    "activation",
    "optimizer",
    "depth",
    "init",
    "width",
    "batch_size",
    "learning_rate",
    "lr_scale",
    "schedule",
    "regularization",
    "mitigation",
    "model",
)


def t_interval(values, level: float = LEVEL) -> tuple[int, float, float, float]:
    """(n, mean, low, high) of the finite values: Student-t interval of the mean; low and high are
    NaN with fewer than 2 values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype="float64")
    n = len(v)
    if n == 0:
        return 0, math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n < 2:
        return n, mean, math.nan, math.nan
    half = float(st.t.ppf((1 + level) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return n, mean, mean - half, mean + half


def half_width(values) -> float:
    """Half-width of the 95 % t interval of the mean; NaN with fewer than 2 values."""
    _, _, lo, hi = t_interval(values)
    return (hi - lo) / 2


def errorbar(values) -> tuple[float, float]:
    """For seaborn's `errorbar=`: the t interval of one group's values."""
    _, _, lo, hi = t_interval(values)
    return lo, hi


def cell_axes(cells: pd.DataFrame, extra: tuple[str, ...] = ()) -> list[str]:
    """The columns that tell cells apart: activation, optimizer, depth, and every other axis that
    varies in this sweep (a preset's own axes included, as `extra`)."""
    keys = ["activation", "optimizer", "depth"]
    for c in (*CELL_AXES, *extra):
        if c in cells and c not in keys and cells[c].astype(str).nunique() > 1:
            keys.append(c)
    return keys


def summary(cells: pd.DataFrame, metric: str = "test/accuracy", extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per cell: its axes, the runs planned or recorded (`runs`), how many gave a value
    (`n`: finished or diverged with a finite metric), mean, standard deviation and the 95 % t
    interval over seeds (`ci_low`, `ci_high`; empty with one seed)."""
    keys = cell_axes(cells, extra)
    rows = []
    for key, g in cells.groupby(keys, dropna=False, sort=True):
        ran = g[g[contract.OUTCOME].isin(contract.RAN)][metric]
        n, mean, lo, hi = t_interval(ran)
        rows.append(
            {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                "runs": len(g),
                "n": n,
                "mean": mean,
                "sd": float(np.std(ran.dropna(), ddof=1)) if n > 1 else math.nan,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "runs", "n", "mean", "sd", "ci_low", "ci_high"])


def compare(a: pd.Series, b: pd.Series) -> str:
    """How a caption states a's lead over b (rows of `summary`): resolved only when the intervals
    separate."""
    if min(a["n"], b["n"]) < 2:
        return f"{a['mean'] - b['mean']:+.3f} on one seed: not resolved (no interval)"
    if a["ci_low"] > b["ci_high"]:
        return f"{a['mean'] - b['mean']:+.3f}, 95 % intervals separate"
    return f"{a['mean'] - b['mean']:+.3f}, not resolved with n={min(a['n'], b['n'])} seeds (95 % intervals overlap)"


def fmt(row: pd.Series, digits: int = 3) -> str:
    """`0.612 [0.571, 0.653] (n=3)`, or `0.612 (n=1)`."""
    if not np.isfinite(row["mean"]):
        return "n/a"
    if row["n"] < 2:
        return f"{row['mean']:.{digits}f} (n={row['n']})"
    return f"{row['mean']:.{digits}f} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}] (n={row['n']})"
