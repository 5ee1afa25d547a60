"""A rerun against the report it reproduces: per cell (matched by run name) the committed and the new
test accuracy, verdict and outcome; per reproduction claim (the rows of every REPORT.md table with a
`reproduced` column) whether it held. Pure: tables in, rows and a decision out (scripts/reproduce.py
runs the sweep and prints them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from study import contract

IDENTICAL, WITHIN, CHANGED = "identical", "within tolerance", "changed"


@dataclass
class CellRow:
    name: str
    committed_acc: float
    new_acc: float
    committed: str  # verdict / outcome
    new: str
    status: str


def cells(committed: pd.DataFrame, new: pd.DataFrame, tolerance: float) -> list[CellRow]:
    """One row per run name of either table. `identical`: the same test accuracy (to 6 significant
    digits, which reports made before 2026-12-02 kept: exact for a count of right answers over at most
    100,000 examples), verdict and outcome; `within tolerance`: accuracy within `tolerance` (0: exact), same verdict and
    outcome; else `changed` (a cell on one side only included)."""
    old, now = (t.drop_duplicates("run_name", keep="last").set_index("run_name") for t in (committed, new))
    rows = []
    for name in sorted(set(old.index) | set(now.index)):
        a, b = (t.loc[name] if name in t.index else None for t in (old, now))
        acc = [float(r["test/accuracy"]) if r is not None else math.nan for r in (a, b)]
        said = [f"{r['verdict']} / {r[contract.OUTCOME]}" if r is not None else "absent" for r in (a, b)]
        same_acc = f"{acc[0]:.6g}" == f"{acc[1]:.6g}"  # a count over at most 10^5 examples: exact
        if a is None or b is None or said[0] != said[1]:
            status = CHANGED
        elif same_acc:
            status = IDENTICAL
        else:
            status = WITHIN if abs(acc[0] - acc[1]) <= tolerance else CHANGED
        rows.append(CellRow(str(name), acc[0], acc[1], said[0], said[1], status))
    return rows


def claims(report_md: str) -> dict[str, str]:
    """claim (first column) -> its `reproduced` value, from every Markdown table of a REPORT.md that
    has a `reproduced` column."""
    out, header = {}, None
    for line in report_md.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cols
        elif "reproduced" in header and not re.fullmatch(r"[-: ]*", "".join(cols)):
            out[cols[0]] = cols[header.index("reproduced")] if len(cols) == len(header) else "?"
    return out


def claim_rows(committed_md: str, new_md: str) -> list[tuple[str, str, str, str]]:
    """(claim, committed, new, held/changed) for every claim of either report."""
    a, b = claims(committed_md), claims(new_md)
    return [
        (k, a.get(k, "absent"), b.get(k, "absent"), "held" if a.get(k) == b.get(k) else "changed")
        for k in sorted(set(a) | set(b))
    ]


def table(rows: list[CellRow], claim_list: list[tuple[str, str, str, str]]) -> str:
    """The side-by-side comparison as aligned text."""
    w = max([len(r.name) for r in rows] + [4])
    lines = [f"{'cell':<{w}}  committed  new      verdict / outcome (committed -> new)  status"]
    for r in rows:
        turn = r.committed if r.committed == r.new else f"{r.committed} -> {r.new}"
        lines.append(f"{r.name:<{w}}  {r.committed_acc:<9.4f}  {r.new_acc:<7.4f}  {turn:<36}  {r.status}")
    counts = {s: sum(r.status == s for r in rows) for s in (IDENTICAL, WITHIN, CHANGED)}
    lines.append("cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for claim, old, new, verdict in claim_list:
        lines.append(f"claim: {claim}: reproduced {old} -> {new}: {verdict}")
    return "\n".join(lines)


def failed(rows: list[CellRow], claim_list) -> bool:
    return any(r.status == CHANGED for r in rows) or any(c[3] == "changed" for c in claim_list)
