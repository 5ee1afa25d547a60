"""Seeds to intervals (study/report/stats.py): the t interval against its textbook formula, the cell
summary, and when a caption may call a difference resolved."""

import math

import numpy as np
import pandas as pd
import pytest

from study.report import build, stats


def test_t_interval_matches_the_textbook_formula_and_widens_for_few_seeds():
    x = [0.61, 0.55, 0.70]
    n, mean, lo, hi = stats.t_interval(x)
    sd = math.sqrt(sum((v - np.mean(x)) ** 2 for v in x) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, df=2), from a printed table
    assert n == 3 and mean == pytest.approx(np.mean(x)) and (lo, hi) == pytest.approx((mean - half, mean + half))
    assert lo < min(x) and hi > max(x)  # wider than the runs themselves: a bootstrap never is
    assert stats.t_interval([0.5, float("nan"), None]) == (
        1,
        0.5,
        pytest.approx(math.nan, nan_ok=True),
        pytest.approx(math.nan, nan_ok=True),
    )
    assert stats.t_interval([])[0] == 0


def _cells(seeds_a, seeds_b):
    rows = []
    for act, accs in (("relu", seeds_a), ("tanh", seeds_b)):
        for seed, acc in enumerate(accs):
            rows.append(
                {
                    "activation": act,
                    "optimizer": "adam",
                    "depth": 8,
                    "seed": seed,
                    "outcome": "finished",
                    "test/accuracy": acc,
                }
            )
    rows.append(
        {"activation": "relu", "optimizer": "adam", "depth": 8, "seed": 9, "outcome": "failed", "test/accuracy": np.nan}
    )
    return pd.DataFrame(rows)


def test_summary_has_one_row_per_cell_and_counts_only_runs_that_ran():
    summ = stats.summary(_cells([0.60, 0.62, 0.61], [0.40, 0.42, 0.41]))
    assert list(summ["activation"]) == ["relu", "tanh"] and list(summ["runs"]) == [4, 3] and list(summ["n"]) == [3, 3]
    assert summ.loc[0, "mean"] == pytest.approx(0.61) and summ.loc[0, "ci_low"] < 0.60 < 0.62 < summ.loc[0, "ci_high"]


@pytest.mark.parametrize(
    "a, b, words",
    [
        ([0.60, 0.62, 0.61], [0.40, 0.42, 0.41], "intervals separate"),
        ([0.60, 0.30, 0.61], [0.55, 0.42, 0.50], "not resolved with n=3 seeds"),
        ([0.60], [0.40], "on one seed: not resolved"),
    ],
)
def test_a_caption_calls_a_difference_resolved_only_when_the_intervals_separate(a, b, words):
    summ = stats.summary(_cells(a, b))
    relu, tanh = summ.iloc[0], summ.iloc[1]
    assert words in stats.compare(relu, tanh)
    table = build.summary_table(summ)
    assert table.count("\n") == 3 and ("n/a (one seed)" in table) == (len(a) == 1)
