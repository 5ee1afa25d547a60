"""The registry of report sections: each study preset's own figures and captions, registered with
`@register("<preset>")` by study/report/presets.py and study/report/second_order.py; `section()`
returns None for presets without one (grid, smoke, paper: the generic report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import yaml

from study import contract, tracking

SECTIONS: dict[str, Callable] = {}  # preset name -> its section; other presets get the generic report


def register(preset: str):
    """Register `fn(sweep, lo, hi) -> [Figure]` as the report section of `preset`
    (conf/experiment/<preset>.yaml, whose `question` heads the section)."""

    def add(fn: Callable) -> Callable:
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


@dataclass
class Figure:
    name: str
    title: str
    make: Callable
    caption: str = ""


def section(s, lo: float, hi: float) -> list[Figure] | None:
    fn = SECTIONS.get(str(s.info.get(contract.PRESET)))
    return None if fn is None else fn(s, lo, hi)
