"""reports/README.md's findings against the committed tables they quote: each number below is
recomputed from the report folder's own files (no store), so a redraw or an edit that lets the
prose and the tables part fails here."""

import re
from pathlib import Path

import pandas as pd
import pytest

from study.report import collect, stats

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = (ROOT / "reports" / "README.md").read_text()
TEXT = re.sub(r"\s+", " ", FINDINGS)  # prose wraps lines anywhere


def _folder(preset: str) -> Path:
    names = set(re.findall(rf"\b({preset}-[0-9]{{8}}-[0-9]{{6}}-[0-9a-f]{{6}})/", FINDINGS))
    return ROOT / "reports" / sorted(names)[0]  # the findings read the first committed one


@pytest.fixture(scope="module")
def grid() -> pd.DataFrame:
    return collect.from_folder(_folder("grid")).cells


def test_the_grid_verdict_counts_are_the_tables(grid):
    counts = grid["verdict"].value_counts()
    said = ", ".join(f"{counts[v]} `{v}`" for v in ("healthy", "slow", "stalled", "collapsed", "died"))
    assert f"Verdicts: {said}" in TEXT and counts.sum() == 108


def test_tanh_and_relu_he_sgd_and_the_collapsed_ratio_range(grid):
    tanh = grid[grid["activation"] == "tanh_glorot"]["verdict"].value_counts()
    assert (
        f"({len(grid[grid['activation'] == 'tanh_glorot'])} cells: {tanh['healthy']} `healthy`, {tanh['slow']} `slow`"
        in TEXT
    )
    he8 = grid[(grid["activation"] == "relu_he") & (grid["optimizer"] == "sgd") & (grid["depth"] == 8)]
    assert f"in {int((~he8['trained']).sum())} of 3 at depth 8" in TEXT
    ratio = grid[(grid["activation"] == "relu_glorot") & grid["depth"].isin([8, 16])]["diag/ratio_first_last_init"]
    assert f"({ratio.min():.1f}–{ratio.max():.1f} over ReLU + Glorot's {len(ratio)} cells at depths 8 and 16" in TEXT


def test_glorot_bengio_table_1_is_the_paired_test_of_the_committed_cells():
    c = collect.from_folder(_folder("glorot_bengio_2010")).cells
    for act in ("tanh", "softsign"):
        run = lambda init, a=act: c[(c["activation"] == a) & (c["init"] == init)]  # noqa: E731
        p = stats.paired(run("glorot_uniform"), run("standard_uniform"))
        diffs = ", ".join(f"{d:+.3f}" for d in p.differences)
        assert f"{act} {diffs}," in TEXT and f"p = {p.p:.2g}" in TEXT and p.resolved


def test_he_2015_steps_an_epoch():
    c = collect.from_folder(_folder("he_2015")).cells
    assert f"({int(c['steps_per_epoch'].iloc[0])} steps an epoch" in TEXT
