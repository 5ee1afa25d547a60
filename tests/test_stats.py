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
    assert table.count("\n") == 3 and ("(n=1)" in table) == (len(a) == 1) and ("[" in table) == (len(a) > 1)


def test_clopper_pearson_matches_the_exact_binomial_tails():
    lo, hi = stats.clopper_pearson(1, 3)
    # the bounds are where the binomial tail probabilities equal 2.5 %: P(X >= 1 | lo) and P(X <= 1 | hi)
    assert 1 - (1 - lo) ** 3 == pytest.approx(0.025) and (1 - hi) ** 3 + 3 * hi * (1 - hi) ** 2 == pytest.approx(0.025)
    assert stats.clopper_pearson(0, 3)[0] == 0 and stats.clopper_pearson(3, 3)[1] == 1
    assert stats.clopper_pearson(3, 3)[0] == pytest.approx(0.025 ** (1 / 3))


def _judged(accs, trained):
    c = _cells(accs, [0.4, 0.42, 0.41])
    flags = [*trained, False, True, True, True]  # relu's seeds, its failed run, tanh's three
    return c.assign(trained=pd.array(flags, dtype="boolean"))


def test_a_cell_whose_seeds_split_is_k_of_n_and_never_an_interval_below_zero():
    """relu_he + sgd at depth 8 in the committed grid: seeds 0.434, 0.105, 0.101, one trained."""
    summ = stats.summary(_judged([0.434, 0.105, 0.101], [True, False, False]))
    relu = summ.iloc[0]
    assert relu["split"] and relu["k"] == 1 and relu["n"] == 3
    assert np.isnan(relu["ci_low"]) and relu["mean_trained"] == pytest.approx(0.434)
    assert (relu["k_low"], relu["k_high"]) == pytest.approx(stats.clopper_pearson(1, 3))
    assert stats.fmt(relu).startswith("1/3 trained [0.01, 0.91]; trained seeds 0.434 (n=1)")
    assert "seeds split" in stats.compare(summ.iloc[1], relu)


def test_an_interval_is_clipped_to_the_quantity_range():
    summ = stats.summary(_judged([0.99, 0.90, 0.999], [True, True, True]))
    assert summ.iloc[0]["ci_high"] == 1.0 and summ.iloc[0]["ci_low"] > 0
    n, mean, lo, hi = stats.t_interval([0.99, 0.90, 0.999])
    assert hi > 1  # what was clipped


def test_paired_differences_use_the_paired_t_test_where_no_cell_splits():
    """Glorot & Bengio's Table 1 row in the committed report: normalized minus standard init, tanh."""
    a = pd.DataFrame({"seed": [0, 1, 2], "outcome": "finished", "test/accuracy": [0.512, 0.515, 0.510]})
    b = a.assign(**{"test/accuracy": [0.500, 0.500, 0.500]})
    p = stats.paired(a, b)
    assert p.test == "paired t" and p.differences == pytest.approx([0.012, 0.015, 0.010]) and p.above == 3
    expected = st_t_p([0.012, 0.015, 0.010])
    assert p.p == pytest.approx(expected) and p.resolved and "paired t p = 0.014: resolved" in p.text()
    split = stats.paired(a.assign(trained=[True, False, True]), b.assign(trained=True))
    assert split.test == "sign test" and split.p == pytest.approx(0.25) and not split.resolved
    assert stats.paired(a.iloc[:1], b.iloc[:1]).text().endswith("one seed: no test")


def test_two_cells_at_chance_in_every_seed_are_not_compared():
    """The new grid's sigmoid + Adam against sigmoid + momentum at depth 16: 3 of 3 above zero on
    chance-level accuracies, paired t p = 0.043, neither cell trained: no test, not resolved."""
    a = pd.DataFrame({"seed": [0, 1, 2], "outcome": "finished", "test/accuracy": [0.1046, 0.1062, 0.1030]})
    b = a.assign(**{"test/accuracy": [0.0958, 0.1000, 0.0960]})
    assert stats.paired(a, b).resolved  # without the `trained` column: the paired t sees a consistent lead
    p = stats.paired(a.assign(trained=False), b.assign(trained=False))
    assert p.test == stats.UNTRAINED and not p.resolved and p.text().endswith("no test")
    assert stats.paired(a.assign(trained=[True, False, False]), b.assign(trained=False)).test == "sign test"


def st_t_p(d):
    """Two-sided p of the one-sample t statistic of the differences, from its formula."""
    from scipy import stats as st

    d = np.asarray(d)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    return 2 * st.t.sf(abs(t), len(d) - 1)


def test_cells_share_weights_only_along_training_axes():
    c = pd.DataFrame(
        {"activation": ["relu", "relu", "tanh"], "optimizer": ["sgd", "adam", "sgd"], "depth": [8, 8, 8], "seed": 0}
    )
    rows = c.set_index(c.index)
    assert stats.shares_weights(c, rows.iloc[0], rows.iloc[1])
    assert not stats.shares_weights(c, rows.iloc[0], rows.iloc[2])
