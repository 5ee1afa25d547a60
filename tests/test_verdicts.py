"""The verdict rules on constructed evidence: each label, the time order of its evidence, and the
reason's numbers."""

import math

import pytest

from study import verdicts
from study.errors import ConfigError

LN10 = math.log(10)


def ev(val_loss=LN10, **kw):
    """Evidence of a finished 10-class run with the given final validation loss."""
    base = {
        "num_classes": 10,
        "val/loss": val_loss,
        "outcome": "finished",
        "diag/ratio_first_last_init": 1.0,
        "diag/ratio_first_last_final": 1.0,
        "diag/forward_ratio_init": 0.5,
        "diag/forward_ratio_final": 0.5,
        "diag/nonfinite_total": 0,
        "diag/grad_growth": 3.0,
    }
    return base | kw


@pytest.mark.parametrize(
    "evidence, label, words",
    [
        (ev(0.8), "healthy", ["progress 0.65"]),
        (ev(0.8, **{"diag/ratio_first_last_init": 549}), "healthy", ["trained despite", "549 > 100"]),
        (ev(2.0), "slow", ["between 0.05 and 0.25"]),
        (ev(float("nan"), outcome="diverged", **{"train/diverged_at_step": 17}), "diverged", ["step 17"]),
        (ev(1.0, **{"diag/nonfinite_total": 3}), "exploding", ["3 non-finite"]),
        (ev(1.0, **{"diag/grad_growth": 5e3}), "exploding", ["grew 5e+03x"]),
        (ev(9.0), "exploding", ["above 1.5 ln K"]),
        (ev(LN10, **{"diag/ratio_first_last_init": 300}), "exploding", ["no progress", "300 > 100"]),
        (ev(LN10, **{"diag/ratio_first_last_init": 3e-10}), "vanishing", ["no progress", "3e-10 < 0.01"]),
        (  # both at init: the forward signal first, and every match in the reason
            ev(LN10, **{"diag/ratio_first_last_init": 3e-10, "diag/forward_ratio_init": 1e-9}),
            "collapsed",
            ["at init: collapsed (forward spread last/first at init 1e-09 < 0.05); vanishing (", "3e-10 < 0.01"],
        ),
        (
            ev(LN10, **{"diag/ratio_first_last_init": 5.9, "diag/forward_ratio_init": 4e-4}),
            "collapsed",
            ["val loss 2.3 = 1 ln K", "forward spread last/first at init 0.0004 < 0.05"],
        ),
        (ev(LN10, **{"diag/dead_frac_final": 0.8}), "died", ["at init no pathology", "0.8 >= 0.5"]),
        (  # started well, then the gradient norm spiked and the top layers went dead and froze
            ev(
                LN10,
                **{
                    "diag/dead_frac_final": 0.9,
                    "diag/update_ratio_final": 2e-8,
                    "diag/forward_ratio_final": 1e-3,
                    "diag/grad_growth": 104.0,
                    "diag/grad_peak_step": 169,
                },
            ),
            "died",
            [
                "in training: collapsed (",
                "dead (",
                "frozen (update/weight in the last epoch 2e-08 < 1e-05)",
                "peaked at step 169",
                "104x",
            ],
        ),
        (  # progressed first (its best epoch), then lost it
            ev(LN10, **{"diag/progress_peak": 0.2}),
            "died",
            ["progress 0.2 at its best epoch", "then lost it"],
        ),
        (  # a bad start that progressed first is a death in training, its start named
            ev(LN10, **{"diag/progress_peak": 0.2, "diag/ratio_first_last_init": 3e-3, "diag/dead_frac_final": 0.7}),
            "died",
            ["at init: vanishing (first/last weight-gradient ratio at init 0.003 < 0.01)", "dead channels"],
        ),
        (  # a bad start that never progressed keeps its initial finding whatever training showed
            ev(LN10, **{"diag/forward_ratio_init": 1e-3, "diag/ratio_first_last_final": 7.7e-7}),
            "collapsed",
            [
                "at init: collapsed (forward spread",
                "in training: vanishing (first/last weight-gradient ratio in the last",
            ],
        ),
        (ev(LN10 * 0.99), "stalled", ["no gradient pathology"]),
        (ev(LN10 * 0.97, **{"val/accuracy": 0.55}), "healthy", ["val accuracy 0.55, progress 0.5"]),
        (ev(LN10 * 0.97, **{"val/accuracy": 0.2}), "slow", ["progress 0.111"]),
        (ev(LN10 * 0.99, **{"val/accuracy": 0.11}), "stalled", ["val accuracy 0.11, progress 0.0111"]),
        (  # a constant prediction scores the majority class's share: that is chance, not progress
            ev(math.log(4), num_classes=4, **{"val/accuracy": 0.344, "diag/chance_accuracy": 0.344}),
            "stalled",
            ["val accuracy 0.344, progress 0"],
        ),
    ],
)
def test_rules(evidence, label, words):
    got, reason = verdicts.decide(evidence)
    assert got == label, reason
    assert all(w in reason for w in words), reason


def test_no_run_near_chance_is_healthy_whatever_the_gradients_say():
    for ratio in (1e-12, 0.5, 5.9, 1e4):
        for forward in (1e-6, 0.5, float("nan")):
            label, _ = verdicts.decide(
                ev(0.99 * LN10, **{"diag/ratio_first_last_init": ratio, "diag/forward_ratio_init": forward})
            )
            assert label != "healthy"


def test_old_runs_without_new_evidence_say_what_is_missing():
    old = {
        "num_classes": 10,
        "val/loss": LN10,
        "outcome": "finished",
        "diag/ratio_first_last_init": 5.9,
        "diag/ratio_first_last_final": 0.15,
    }
    label, reason = verdicts.decide(old)
    assert label == "stalled" and "forward signal not recorded" in reason


def test_thresholds_change_the_label_and_bad_ones_fail():
    e = ev(2.0)
    assert verdicts.decide(e)[0] == "slow"
    assert verdicts.decide(e, verdicts.Thresholds.from_mapping({"progress_healthy": "0.1"}))[0] == "healthy"
    with pytest.raises(ConfigError, match="unknown verdict threshold 'progres'"):
        verdicts.Thresholds.from_mapping({"progres": 1})
    with pytest.raises(ConfigError, match="must be a number"):
        verdicts.Thresholds.from_mapping({"dead_above": "lots"})
    with pytest.raises(ConfigError, match="must not exceed"):
        verdicts.Thresholds.from_mapping({"progress_min": 0.5})


def test_no_run_far_above_chance_accuracy_is_called_a_pathology():
    for loss in (0.5 * LN10, 0.99 * LN10, 1.2 * LN10):
        for ratio in (1e-12, 5.9, 1e4):
            for forward in (1e-6, 0.5):
                e = ev(loss, **{"val/accuracy": 0.6, "diag/ratio_first_last_init": ratio})
                label, reason = verdicts.decide(e | {"diag/forward_ratio_init": forward})
                assert label == "healthy", reason


def test_progress():
    assert verdicts.accuracy_progress(0.1, 10) == pytest.approx(0)
    assert verdicts.accuracy_progress(1.0, 4) == 1
    assert verdicts.accuracy_progress(0.3, 4, chance=0.3) == 0
    assert verdicts.progress(LN10, 10) == pytest.approx(0)
    assert verdicts.progress(0.0, 4) == 1
    assert math.isnan(verdicts.progress(float("inf"), 10))


def test_the_initial_finding_uses_initialisation_evidence_only():
    """Cells with the same initial weights share it whatever training did (optimizer, progress)."""
    start = {"diag/ratio_first_last_init": 5.7, "diag/forward_ratio_init": 9e-4}
    ends = [
        {"val/loss": LN10, "diag/ratio_first_last_final": 7.7e-7},  # what Adam left: vanishing at the end
        {"val/loss": LN10, "diag/forward_ratio_final": 1e-4},
        {"val/loss": 0.8},  # trained
    ]
    found = {verdicts.init_finding(ev(**start, **end)) for end in ends}
    assert found == {"collapsed"}
    assert verdicts.init_finding(ev(0.8)) == "none"
    assert verdicts.init_finding(ev(0.8, **{"diag/ratio_first_last_init": 300})) == "exploding"
    assert set(verdicts.INIT_FINDINGS) >= found


@pytest.mark.parametrize("ratio, near", [(0.0117, True), (0.0071, True), (0.02, False), (0.004, False)])
def test_a_value_near_its_threshold_is_said_to_be(ratio, near):
    _, reason = verdicts.decide(ev(LN10, **{"diag/ratio_first_last_init": ratio}))
    assert ("near the threshold" in reason) == near, reason


def test_peak_progress_is_the_best_epoch():
    epochs = [{"val/loss": LN10, "val/accuracy": 0.1}, {"val/loss": 1.2, "val/accuracy": 0.6}, {"val/loss": LN10}]
    assert verdicts.peak_progress(epochs, 10) == pytest.approx(max(1 - 1.2 / LN10, (0.6 - 0.1) / 0.9))
    assert math.isnan(verdicts.peak_progress([], 10))


def test_a_peak_step_backfilled_from_the_sampled_step_table_is_not_passed_off_as_recorded():
    """he_2015's 60 sampled steps put one run's peak at step 26 where the recorded peak is at 89 (and
    show 2.8x where it grew 35x): a backfilled step is flagged, and the reason says so."""
    import pandas as pd

    from study.report import collect

    cells = pd.DataFrame({"run_id": ["old", "new"], verdicts.GROWTH: [35.4, 35.4], verdicts.GROWTH_STEP: [None, 89.0]})
    cells[verdicts.PROGRESS_PEAK] = 0.0
    steps = pd.DataFrame(
        {"run_id": "old", "group": "global", "stat": "global_norm", "step": [0, 26, 52], "value": [1.0, 2.8, 1.5]}
    )
    filled = collect.backfill(cells, pd.DataFrame(), steps).set_index("run_id")
    assert filled.loc["old", verdicts.GROWTH_STEP] == 26 and filled.loc["old", verdicts.GROWTH_STEP_SAMPLED] == 1
    assert filled.loc["new", verdicts.GROWTH_STEP_SAMPLED] == 0
    said = verdicts._turned(filled.loc["old"].to_dict())
    assert "its step not recorded" in said and "step 26" in said and not said.startswith("turned")
    assert verdicts._turned(filled.loc["new"].to_dict()).startswith("the global gradient norm peaked at step 89")
