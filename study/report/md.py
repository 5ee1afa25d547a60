"""Markdown of REPORT.md: one table builder and one number format for every section."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def fmt(v, digits: int = 3) -> str:
    """A number in `digits` significant digits, `n/a` when it is missing or not finite."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}g}"


def md_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table: the header, its rule, a line per row (each value as text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
