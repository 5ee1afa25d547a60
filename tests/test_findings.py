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
    return ROOT / "reports" / sorted(names)[-1]  # the findings read the newest one they name


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
    he = grid[grid["activation"] == "relu_he"]
    untrained = he[~he["trained"]]
    assert f"He trains in {int(he['trained'].sum())} of {len(he)}" in TEXT
    # "all but one SGD seed at 16"
    assert len(untrained) == 1 and (untrained[["optimizer", "depth"]].iloc[0] == ["sgd", 16]).all()
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


def test_the_optimizer_contrasts_are_the_tables(grid):
    t = stats.contrasts(grid, extra=collect.extra_axes(grid))
    learn = t[t["activation"].isin(["tanh_glorot", "relu_he", "relu_glorot"]) & (t["a"] == "adam")]
    assert f"in {int(learn['above'].sum())} of {int(learn['seeds'].sum())} seed pairs" in TEXT
    tests = t["test"].value_counts()
    assert f"{int(t['resolved'].sum())} of the {len(t)} paired contrasts" in TEXT
    assert f"{tests['sign test']} are sign tests of a split cell" in TEXT
    assert f"{tests[stats.UNTRAINED]} compare two cells that trained in no seed" in TEXT


def test_the_reference_numbers_are_its_tables():
    from scipy import stats as st

    from study.report.sections import reference

    s = collect.from_folder(_folder("grid_reference"))
    t = reference.at_budget_and_end(s.cells, s.epochs)
    rho = st.spearmanr(t["val_acc_96"], t["val_acc_end"]).statistic
    assert f"at 96 steps and at 1,280 is {rho:.2f}" in TEXT
    assert f"{int(t['levelled'].sum())} of {len(t)} levelled off" in TEXT
    end = t.set_index(["activation", "optimizer"])["val_acc_end"]
    for arm, said in (("relu_glorot", "ReLU + Glorot"), ("sigmoid_glorot", "sigmoid")):
        three = ", ".join(f"{end[arm, o]:.3f}" for o in ("adam", "momentum", "sgd"))
        assert f"{said} ({three})" in TEXT
