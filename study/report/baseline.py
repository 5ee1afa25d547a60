"""A new sweep's cells beside a committed baseline's (`make_report.py --baseline reports/<folder>`):
what DeepOBS does for optimizers, without rerunning the baseline.

The baseline's cells are taken from its folder alone (collect.from_folder). They must share the new
sweep's data and budget (SETTINGS, and the number of epochs) and hold every (arm, depth, seed) the
new sweep ran, else the report is refused naming the keys that differ. Only the baseline cells with
an (arm, depth, seed) of the new sweep are kept; they start from the same initial weights as the new
cells of that seed (the seed alone decides them), so the report compares them paired by seed. Every
table gets a `source` column (`baseline` or `new`); where a new cell would carry a baseline cell's
labels (the new sweep changed a key that no label shows, e.g. `model.pooling=average`), its
optimizer label gains its value (`adam (average)` for `model.pooling=average`).
"""

from __future__ import annotations

import json

import pandas as pd

from study import contract
from study.errors import ConfigError
from study.report import collect, stats

SETTINGS = ("dataset", "batch_size", "steps_per_epoch", "width", "model", "num_classes", "loss_fn")
PAIRED = ("activation", "depth", "seed")  # the same values: the same initial weights
LABELS = ("optimizer", "arm", "model.activation", "model.depth", "seed", "experiment")  # shown by a label


def _ran(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[cells[contract.OUTCOME].isin(contract.RAN)]


def _epochs(s: collect.Sweep) -> set:
    e = s.epochs
    return set() if e.empty else set(e[e["metric"] == "train/loss"].groupby("run_id")["epoch"].max() + 1)


def _changed_keys(new: dict, base: dict) -> list[str]:
    """The new sweep's command-line overrides the baseline's lack, less those a label shows."""
    mine, theirs = (set(json.loads(i.get(contract.OVERRIDES) or "[]")) for i in (new, base))
    keys = {o: o.split("=", 1)[0].lstrip("+~") for o in mine - theirs if "=" in o}
    return sorted(o for o, k in keys.items() if k not in LABELS and not k.startswith(contract.WHERE))


def merge(new: collect.Sweep, base: collect.Sweep, where: str) -> collect.Sweep:
    n, b = _ran(new.cells), _ran(base.cells)
    differ = [
        f"{k} {sorted(map(str, set(b[k])))} (baseline) against {sorted(map(str, set(n[k])))}"
        for k in SETTINGS
        if k in n and k in b and set(map(str, n[k])) != set(map(str, b[k]))
    ]
    if _epochs(new) and _epochs(base) and _epochs(new) != _epochs(base):
        differ.append(f"epochs {sorted(_epochs(base))} (baseline) against {sorted(_epochs(new))}")
    if differ:
        raise ConfigError(f"--baseline {where} differs from this sweep in data or budget: {'; '.join(differ)}")
    key = lambda c: list(zip(*(c[k].astype(str) for k in PAIRED)))  # noqa: E731
    lacking = sorted(set(key(n)) - set(key(b)))
    if lacking:
        shown = ", ".join("/".join(x) for x in lacking[:5])
        raise ConfigError(f"--baseline {where} has no cells for (arm, depth, seed) {shown}: {len(lacking)} missing")
    kept = base.cells[[k in set(key(n)) for k in key(base.cells)]]
    cells = new.cells.copy()
    same = set(zip(*(kept[k].astype(str) for k in ("optimizer", *PAIRED))))
    if any(k in same for k in zip(*(cells[k].astype(str) for k in ("optimizer", *PAIRED)))):
        changed = _changed_keys(new.info, base.info)
        if not changed:
            raise ConfigError(f"--baseline {where}: this sweep's cells are the baseline's own (no key differs)")
        cells["optimizer"] = cells["optimizer"] + " (" + ", ".join(o.split("=", 1)[1] for o in changed) + ")"
    relabel = dict(zip(cells["run_id"], cells["optimizer"]))
    ids = set(kept["run_id"])
    tables, base_tables = {}, base.tables()
    for t, mine in new.tables().items():
        theirs = base_tables[t]
        if not mine.empty:
            mine = mine.assign(optimizer=mine["run_id"].map(relabel).fillna(mine["optimizer"]), source="new")
        if not theirs.empty:
            theirs = theirs[theirs["run_id"].isin(ids)].assign(source="baseline")
        parts = [x for x in (theirs, mine) if not x.empty]
        tables[t] = pd.concat(parts, ignore_index=True) if parts else mine
    both = pd.concat([kept.assign(source="baseline"), cells.assign(source="new")], ignore_index=True)
    if "unreadable" in both:  # a baseline folder made before the column existed: nothing unreadable
        both["unreadable"] = both["unreadable"].fillna("")
    info = {**new.info, "baseline": where, "baseline_sweep_id": base.info.get(contract.SWEEP_ID)}
    if cells["optimizer"].ne(new.cells["optimizer"]).any():
        info["baseline_marked"] = ", ".join(changed)
    return collect.Sweep.of(info, both, tables)


def paired(cells: pd.DataFrame) -> pd.DataFrame:
    """Every new optimizer label against every baseline optimizer at the same arm and depth, paired
    by seed (same initial weights) by stats.py's rule 3: seeds, per-seed differences of test accuracy
    (new − baseline), how many are above / below zero, the test (paired t; the sign test where a
    cell's seeds split; none where neither trained in any seed), its p and whether it is resolved."""
    ran = _ran(cells)
    rows = []
    new, old = ran[ran["source"] == "new"], ran[ran["source"] == "baseline"]
    for (arm, depth, opt_new), a in new.groupby(["activation", "depth", "optimizer"]):
        for opt_old, b in old[(old["activation"] == arm) & (old["depth"] == depth)].groupby("optimizer"):
            p = stats.paired(a, b)
            rows.append(
                {
                    "activation": arm,
                    "depth": depth,
                    "new": opt_new,
                    "baseline": opt_old,
                    "differences": " ".join(f"{x:+.3f}" for x in p.differences),
                    **p.row(),
                }
            )
    return pd.DataFrame(rows)
