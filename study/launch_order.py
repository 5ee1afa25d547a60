"""Launch order of a sweep's cells: the most expensive first.

The sweeper itself, `hydra_plugins.study_sweeper.ordered_sweeper.CostOrderedSweeper` (Hydra loads
sweepers only from the `hydra_plugins` package), is Hydra's basic sweeper with this order.

Parallel workers (joblib, SLURM array slots, Ray tasks) take cells in launch order. In the order
written, a grid's last cell is often its deepest, and one worker trains it alone while the others
sit idle. Launching the longest cells first (the longest-processing-time rule) leaves only short
cells for the end. The cost is estimated from the swept values alone (the rest of the config is
the same in every cell): proportional to `model.depth`, `train.epochs` and `data.train_subset`,
to the square of `model.width` (a conv layer's work), and inversely to `train.batch_size`
(smaller batches, more steps; `full` counts as the largest). Ties keep the written order, so
`order: as_written` and a grid without these keys launch exactly as Hydra's basic sweeper does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from study.errors import unknown

ORDERS = ("cost", "as_written")
# override key -> exponent of its value in the estimated cost
COST_KEYS = {
    "model.depth": 1.0,
    "model.width": 2.0,
    "train.epochs": 1.0,
    "data.train_subset": 1.0,
    "train.batch_size": -1.0,
}


SWEEP_CALLBACK = "study.sweep.MlflowSweepCallback"  # its Hydra `_target_` (not imported: TensorFlow)


def checks_every_cell(config) -> bool:
    """Whether this sweep runs the sweep callback, which composes and checks every cell of a
    basic-sweeper grid before the parent run and stops the sweep if one fails."""
    callbacks = config.hydra.get("callbacks") or {}
    return any(str(cb.get("_target_", "")) == SWEEP_CALLBACK for cb in callbacks.values())


def estimated_cost(overrides: Sequence[str]) -> float:
    """Relative cost of one cell from its overrides (`key=value`); 1 when no cost key is swept."""
    log_cost = 0.0
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key not in COST_KEYS:
            continue
        if key == "train.batch_size" and value == "full":
            log_cost += COST_KEYS[key] * math.log(1e9)  # larger than any numeric batch
            continue
        try:
            v = float(value)
        except ValueError:
            continue
        if v > 0:
            log_cost += COST_KEYS[key] * math.log(v)
    return math.exp(log_cost)


def order_cells(cells: Sequence[Sequence[str]], order: str = "cost") -> list[list[str]]:
    """The cells in launch order: most expensive first (stable), or as written."""
    if order not in ORDERS:
        raise unknown("hydra.sweeper.order", order, ORDERS)
    cells = [list(c) for c in cells]
    return cells if order == "as_written" else sorted(cells, key=estimated_cost, reverse=True)


def eta(elapsed_s: float, costs: Sequence[float], started: int) -> float | None:
    """Seconds left in a sweep whose cells (in launch order) have estimated `costs`, when `started`
    of them have begun after `elapsed_s`: the time so far per unit of cost begun, times the cost not
    yet begun (parallel workers included, as they begin cells in this order). None before a cost is
    known."""
    begun, total = sum(costs[:started]), sum(costs)
    if started < 1 or begun <= 0 or elapsed_s <= 0:
        return None
    return elapsed_s / begun * (total - begun)


def progress(index: int, n_cells: int | None, started: float | None, costs: Sequence[float] | None, now: float):
    """`[cell i/N] (3:12 elapsed, ETA 10:05) ` for the cell of 0-based launch `index`."""
    head = f"[cell {index + 1}/{n_cells or '?'}] "
    if started is None:
        return head
    left = eta(now - started, costs, index) if costs and len(costs) == n_cells else None
    return head + f"({_clock(now - started)} elapsed, ETA {_clock(left) if left is not None else '?'}) "


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
