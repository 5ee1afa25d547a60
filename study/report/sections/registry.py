"""The registry of report sections: each preset's figures, captions and tables, registered with
`@register("<preset>", ...)` in its family's module of study/report/sections/; `section()` gives a
preset without one the generic report (`grid`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import yaml

from study import contract, tracking, verdicts
from study.errors import ConfigError
from study.report.md import md_table

SECTIONS: dict[str, Callable] = {}  # preset name -> its section; other presets get the generic one


def register(*presets: str):
    """Register `fn(sweep, view) -> Section | [Figure]` as the report section of each of `presets`
    (conf/experiment/<preset>.yaml, whose `question` heads the report). A list of figures gets the
    preset's standard table of cells (`cells_table`)."""

    def add(fn: Callable) -> Callable:
        for preset in presets:
            if preset in SECTIONS:
                raise ValueError(f"report section of preset {preset!r} registered twice")
            SECTIONS[preset] = fn
        return fn

    return add


def question(info: dict) -> str | None:
    """The sweep's question: tag `question` of its parent run, else (sweeps recorded before the tag
    existed) the `question` in its preset's YAML, if that file is here."""
    if info.get(contract.QUESTION):
        return str(info[contract.QUESTION])
    path = tracking.REPO_ROOT / "conf" / "experiment" / f"{info.get(contract.PRESET)}.yaml"
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text()) or {}).get("question")


def criteria(info: dict, defaults: dict) -> tuple[dict, str]:
    """The preset's decision rules: tag `criteria` of its parent run (JSON of the YAML's `criteria`
    block, fixed before running), each missing key from `defaults`; and where they came from, for
    the caption. A key `defaults` does not name, or a value of another kind, is an error naming it."""
    raw = info.get(contract.CRITERIA)
    try:
        given = (json.loads(raw) if isinstance(raw, str) else raw) if raw else {}
    except json.JSONDecodeError as err:
        raise ConfigError(f"tag {contract.CRITERIA}={raw!r} of the sweep's parent run is not JSON: {err}") from None
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"criteria.{key}: unknown rule of this preset's report; valid: {sorted(defaults)}")
        want = defaults[key]
        number = isinstance(want, (int, float)) and not isinstance(want, bool)
        if (number and not isinstance(value, (int, float))) or (isinstance(want, list) and not isinstance(value, list)):
            raise ConfigError(f"criteria.{key}={value!r} must be {type(want).__name__} like the default {want!r}")
    said = "the preset's `criteria`, recorded on the sweep's parent run before its first cell"
    if not given:
        said = "the report's defaults (this sweep predates the preset's `criteria` tag)"
    return {**defaults, **given}, said


@dataclass
class Figure:
    name: str
    title: str
    make: Callable  # () -> matplotlib Figure, or None when the sweep has no data for it
    caption: str = ""


@dataclass
class Section:
    """What a preset's report shows: its figures, the markdown tables after the mean over seeds, and
    lines for the report's metadata."""

    figures: list[Figure]
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class View:
    """What the report was asked to show: the verdict's thresholds, one depth and optimizer."""

    thresholds: verdicts.Thresholds
    depth: int | None
    optimizer: str | None

    @property
    def lo(self) -> float:
        return self.thresholds.vanishing_below

    @property
    def hi(self) -> float:
        return self.thresholds.exploding_above


GENERIC = "grid"  # the section of presets without their own


def section(s, view: View) -> Section:
    """The sweep's section: its preset's, else the generic one (registered as `grid`)."""
    fn = SECTIONS.get(str(s.info.get(contract.PRESET))) or SECTIONS[GENERIC]
    out = fn(s, view)
    return out if isinstance(out, Section) else Section(list(out), tables=[cells_table(s.cells)])


def fmt(v, d=3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{d}g}"


def done(c: pd.DataFrame) -> pd.DataFrame:
    """The cells with results (finished or diverged)."""
    return c[c[contract.OUTCOME].isin(contract.RAN)]


def cells_table(c: pd.DataFrame) -> str:
    """One row per cell: outcome, verdict, test accuracy, ratio at initialisation, wall time."""
    header = ["cell", contract.OUTCOME, "gradient verdict", "reason", "test accuracy", "first/last ratio at init"]
    rows = [
        (
            r["run_name"],
            r[contract.OUTCOME],
            r["verdict"],
            r[contract.VERDICT_REASON],
            fmt(r["test/accuracy"]),
            fmt(r[verdicts.RATIO_INIT]),
            fmt(r["time/wall_s"], 4),
        )
        for _, r in c.sort_values("run_name").iterrows()
    ]
    return md_table([*header, "wall time (s)"], rows)


def verdict_counts(cells: pd.DataFrame) -> str:
    counts = cells["verdict"].value_counts()
    return ", ".join(f"{counts[v]} {v}" for v in verdicts.LABELS if v in counts) or "none"
