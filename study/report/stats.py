"""Seeds to conclusions: how a cell's seeds are summarised and when a caption may call a
difference resolved. The rules:

1. **Outcomes that split.** A seed *trained* when its progress P reached the verdict's
   `progress_min` (the `trained` column, study/report/collect.judge). Where a cell's seeds agree
   (all trained, or none did), its value is the mean over seeds with a 95 % Student-t interval.
   Where they split (some trained, some stayed at chance) the outcome is bimodal and a mean with a t
   interval is meaningless (it ran below zero accuracy): the cell is reported as `k/n trained` with
   an exact binomial (Clopper-Pearson) 95 % interval of the fraction, and the mean of the seeds that
   trained (with its t interval when at least two did).
2. **Ranges.** No interval is printed outside the quantity's range: an accuracy's is clipped to
   [0, 1], a loss's to [0, inf) (the t interval assumes normal seeds; at a bound it is cut, not
   extended).
3. **Paired by seed.** Cells that share their seeds' initial weights (the same arm, depth, width and
   model, differing only in how they train: optimizer, learning rate, schedule, batch size,
   regularisation), or the same seed across an initialisation axis, are compared by their per-seed
   differences: the differences, how many are above and below zero, and a two-sided test, the
   paired t test where neither cell splits, else the exact sign test (ties dropped; with 3 seeds its
   smallest p is 0.25, so a split cell's difference is never resolved on 3 seeds). A difference is
   resolved when p < 0.05. Where neither cell trained in any seed, both sit at chance and there is
   no training outcome to compare: no test is run (`both untrained`), however consistent the
   differences in chance-level accuracy (a paired t once called sigmoid + Adam ahead of sigmoid +
   momentum at depth 16 with p = 0.043 on accuracies of 0.105 and 0.098).
4. **Unpaired.** Cells that share nothing (different arms or depths) keep the interval view: resolved
   only where their two 95 % t intervals do not overlap (for n = 3 roughly p < 0.005: conservative).

Why t and not the bootstrap: with 3 seeds a percentile bootstrap can only return values between the
smallest and largest run, so its "95 %" interval is far too narrow; the t interval assumes the seeds'
results are roughly normal and widens correctly for small n (t(0.975, 2) = 4.30).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from study import contract

LEVEL = 0.95
UNTRAINED = "both untrained"  # the test of two cells that both stayed at chance in every seed: none
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
# axes along which two cells still share each seed's initial weights (or its seed, for `init`)
PAIRED_AXES = (
    "optimizer",
    "learning_rate",
    "lr_scale",
    "lr",
    "schedule",
    "batch_size",
    "regularization",
    "init",
    "init_scale",
)
ALPHA = 0.05


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


def errorbar(values, metric: str = "") -> tuple[float, float]:
    """For seaborn's `errorbar=` and curve bands: the t interval of one group's values, clipped to
    `metric`'s range (rule 2)."""
    _, _, lo, hi = t_interval(values)
    return clip(lo, hi, metric)


def cell_text(runs: pd.DataFrame, metric: str = "test/accuracy", digits: int = 2, sep: str = "") -> str:
    """A heatmap cell's text for one cell's runs (rows with `outcome`, `metric` and, when judged,
    `trained`): `k/n` where the seeds split, with the trained seeds' mean under it; else the mean and,
    with several seeds, the half-width of its t interval (`±h`), or the clipped interval `[lo, hi]`
    where the interval meets the metric's range."""
    ran = runs[np.isfinite(runs[metric].astype(float))]
    if contract.OUTCOME in ran:
        ran = ran[ran[contract.OUTCOME].isin(contract.RAN)]
    n, mean, lo, hi = t_interval(ran[metric])
    if n == 0:
        return ""
    if "trained" in ran and ran["trained"].notna().all():
        k = int(ran["trained"].astype(bool).sum())
        if 0 < k < n:
            return f"{k}/{n}{sep}({ran[ran['trained'].astype(bool)][metric].mean():.{digits}f})"
    if not np.isfinite(lo):
        return f"{mean:.{digits}f}"
    clo, chi = clip(lo, hi, metric)
    if (clo, chi) != (lo, hi):
        return f"{mean:.{digits}f}{sep}[{clo:.{digits}f}, {chi:.{digits}f}]"
    return f"{mean:.{digits}f}{sep}±{(hi - lo) / 2:.{digits}f}"


def cell_axes(cells: pd.DataFrame, extra: tuple[str, ...] = ()) -> list[str]:
    """The columns that tell cells apart: activation, optimizer, depth, and every other axis that
    varies in this sweep (a preset's own axes included, as `extra`)."""
    keys = ["activation", "optimizer", "depth"]
    for c in (*CELL_AXES, *extra):
        if c in cells and c not in keys and cells[c].astype(str).nunique() > 1:
            keys.append(c)
    return keys


def bounds(metric: str) -> tuple[float, float]:
    """The range of a metric: [0, 1] for an accuracy, [0, inf) for a loss, else unbounded."""
    if metric.endswith("accuracy"):
        return 0.0, 1.0
    if metric.endswith("loss"):
        return 0.0, math.inf
    return -math.inf, math.inf


def clip(lo: float, hi: float, metric: str) -> tuple[float, float]:
    a, b = bounds(metric)
    return (max(lo, a) if np.isfinite(lo) else lo), (min(hi, b) if np.isfinite(hi) else hi)


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact binomial interval of a fraction k/n (NaN with n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    a = 1 - level
    lo = 0.0 if k == 0 else float(st.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(st.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def summary(cells: pd.DataFrame, metric: str = "test/accuracy", extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per cell: its axes, the runs planned or recorded (`runs`), how many gave a value
    (`n`: finished or diverged with a finite metric), how many trained (`k`, with the Clopper-Pearson
    interval of k/n, `k_low`, `k_high`; NaN when not judged) and whether they split; the mean,
    standard deviation and 95 % t interval over the seeds (`ci_low`, `ci_high`: only where the seeds
    agree, clipped to the metric's range), and the mean and interval of the seeds that trained."""
    keys = cell_axes(cells, extra)
    rows = []
    for key, g in cells.groupby(keys, dropna=False, sort=True):
        ran = g[g[contract.OUTCOME].isin(contract.RAN) & np.isfinite(g[metric].astype(float))]
        n, mean, lo, hi = t_interval(ran[metric])
        k = int(ran["trained"].fillna(False).sum()) if "trained" in ran and ran["trained"].notna().any() else None
        split = k is not None and 0 < k < n
        kt, mt, lot, hit = (
            t_interval(ran[ran["trained"].fillna(False).astype(bool)][metric]) if k else (0, *[math.nan] * 3)
        )
        lo, hi = (math.nan, math.nan) if split else clip(lo, hi, metric)
        k_low, k_high = clopper_pearson(k, n) if k is not None else (math.nan, math.nan)
        rows.append(
            {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                "runs": len(g),
                "n": n,
                "k": k if k is not None else math.nan,
                "k_low": k_low,
                "k_high": k_high,
                "split": split,
                "mean": mean,
                "sd": float(np.std(ran[metric], ddof=1)) if n > 1 else math.nan,
                "ci_low": lo,
                "ci_high": hi,
                "mean_trained": mt,
                "trained_ci_low": clip(lot, hit, metric)[0],
                "trained_ci_high": clip(lot, hit, metric)[1],
            }
        )
    cols = [*keys, "runs", "n", "k", "k_low", "k_high", "split", "mean", "sd", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=[*cols, "mean_trained", "trained_ci_low", "trained_ci_high"])


def compare(a: pd.Series, b: pd.Series) -> str:
    """How a caption states a's lead over b (rows of `summary`, cells that share nothing): resolved
    only when the intervals separate; a cell whose seeds split has no interval to compare."""
    if min(a["n"], b["n"]) < 2:
        return f"{a['mean'] - b['mean']:+.3f} on one seed: not resolved (no interval)"
    if a.get("split") or b.get("split"):
        return f"{a['mean'] - b['mean']:+.3f}, not resolved (seeds split: no interval to compare)"
    if a["ci_low"] > b["ci_high"]:
        return f"{a['mean'] - b['mean']:+.3f}, 95 % intervals separate"
    return f"{a['mean'] - b['mean']:+.3f}, not resolved with n={min(a['n'], b['n'])} seeds (95 % intervals overlap)"


def fmt(row: pd.Series, digits: int = 3) -> str:
    """`0.612 [0.571, 0.653] (n=3)`, `0.612 (n=1)`, or where seeds split
    `1/3 trained [0.008, 0.906]; trained 0.434 (n=1)`."""
    if not np.isfinite(row["mean"]):
        return "n/a"
    if row.get("split"):
        trained = f"{row['mean_trained']:.{digits}f}"
        if np.isfinite(row["trained_ci_low"]):
            trained += f" [{row['trained_ci_low']:.{digits}f}, {row['trained_ci_high']:.{digits}f}]"
        return (
            f"{int(row['k'])}/{row['n']} trained [{row['k_low']:.2f}, {row['k_high']:.2f}]; "
            f"trained seeds {trained} (n={int(row['k'])})"
        )
    if row["n"] < 2:
        return f"{row['mean']:.{digits}f} (n={row['n']})"
    return f"{row['mean']:.{digits}f} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}] (n={row['n']})"


def shares_weights(cells: pd.DataFrame, a: pd.Series, b: pd.Series, extra: tuple[str, ...] = ()) -> bool:
    """Whether cells a and b (rows of `summary`) differ only along PAIRED_AXES: then their runs of one
    seed started from the same weights (or the same seed's draw of another initialisation)."""
    keys = cell_axes(cells, extra)
    return all(str(a[k]) == str(b[k]) for k in keys if k not in PAIRED_AXES)


def where(cells: pd.DataFrame, **values) -> pd.DataFrame:
    """The runs whose columns equal `values` (compared as text: 8 and 8.0 and '8' alike)."""
    sel = np.ones(len(cells), bool)
    for k, v in values.items():
        sel &= (cells[k].astype(str) == str(v)).to_numpy()
    return cells[sel]


def runs_of(cells: pd.DataFrame, row: pd.Series, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The runs (rows of the cells table) of one cell, a row of `summary`."""
    return where(cells, **{k: row[k] for k in cell_axes(cells, extra)})


@dataclass
class Paired:
    """Two cells' per-seed differences (a - b) and the test rule 3 chose."""

    seeds: list
    differences: list[float]
    above: int
    below: int
    test: str  # "paired t", "sign test", "both untrained" or "none"
    p: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.differences)) if self.differences else math.nan

    @property
    def resolved(self) -> bool:
        return bool(np.isfinite(self.p) and self.p < ALPHA)

    def row(self) -> dict:
        """The comparison's columns of a table row: seeds, mean difference, signs, test, p, resolved."""
        return {
            "seeds": len(self.differences),
            "mean_difference": self.mean,
            "above": self.above,
            "below": self.below,
            "test": self.test,
            "p": self.p,
            "resolved": self.resolved,
        }

    def text(self, digits: int = 3) -> str:
        """`+0.012, +0.015, +0.010 (3 above, 0 below zero); paired t p = 0.016: resolved at 0.05`."""
        if not self.differences:
            return "no seed in common"
        diffs = ", ".join(f"{d:+.{digits}f}" for d in self.differences)
        head = f"{diffs} ({self.above} above, {self.below} below zero)"
        if self.test == "none":
            return f"{head}; one seed: no test"
        if self.test == UNTRAINED:
            return f"{head}; neither cell trained in any seed: no test"
        said = "resolved" if self.resolved else "not resolved"
        return f"{head}; {self.test} p = {self.p:.2g}: {said} at {ALPHA:g}"


def paired(a: pd.DataFrame, b: pd.DataFrame, metric: str = "test/accuracy") -> Paired:
    """Rule 3 on the runs of two cells (rows of the cells table with `seed`, `trained`, `outcome`):
    matched by seed among the runs that ran."""
    ran = lambda c: c[c[contract.OUTCOME].isin(contract.RAN) & np.isfinite(c[metric].astype(float))]  # noqa: E731
    m = ran(a).merge(ran(b), on="seed", suffixes=("_a", "_b")).sort_values("seed")
    d = (m[f"{metric}_a"] - m[f"{metric}_b"]).to_numpy(dtype=float)
    above, below = int((d > 0).sum()), int((d < 0).sum())
    split = any(col in m and 0 < m[col].fillna(False).astype(bool).sum() < len(m) for col in ("trained_a", "trained_b"))
    untrained = all(col in m and not m[col].fillna(False).astype(bool).any() for col in ("trained_a", "trained_b"))
    if len(d) < 2:
        test, p = "none", math.nan
    elif untrained:
        test, p = UNTRAINED, math.nan
    elif split or np.std(d) == 0:
        test = "sign test"
        p = float(st.binomtest(above, above + below).pvalue) if above + below else 1.0
    else:
        test, p = "paired t", float(st.ttest_rel(m[f"{metric}_a"], m[f"{metric}_b"]).pvalue)
    return Paired(list(m["seed"]), [float(x) for x in d], above, below, test, p)


def contrasts(cells: pd.DataFrame, axis: str = "optimizer", metric: str = "test/accuracy", extra=()) -> pd.DataFrame:
    """Every pair of values of `axis` (a paired axis: optimizer, init, ...) within each group of cells
    that agree on every other cell axis, compared by rule 3 (a - b, a before b in sorted order): one
    row per group and pair with the differences, the sign counts, the test and its p."""
    keys = [k for k in cell_axes(cells, extra) if k != axis]
    fixed = [k for k in keys if k not in PAIRED_AXES]
    # a paired axis that follows from `axis` (the grid's learning rate, set per optimizer) is not a group
    keys = [
        k
        for k in keys
        if k in fixed or cells.assign(_k=cells[k].astype(str)).groupby([*fixed, axis])["_k"].nunique().max() > 1
    ]
    rows = []
    for key, g in cells.groupby(keys, dropna=False, sort=True):
        values = sorted(g[axis].astype(str).unique())
        for i, a in enumerate(values):
            for b in values[i + 1 :]:
                p = paired(g[g[axis].astype(str) == a], g[g[axis].astype(str) == b], metric)
                rows.append(
                    {
                        **dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                        "a": a,
                        "b": b,
                        **p.row(),
                        "text": p.text(),
                    }
                )
    return pd.DataFrame(rows)
