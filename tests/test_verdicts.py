"""The verdict rules on constructed evidence: each label, its order, and the reason's numbers."""

import math

import pytest

from study import verdicts
from study.errors import ConfigError

LN10 = math.log(10)


def ev(val_loss, **kw):
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
        (
            ev(LN10, **{"diag/ratio_first_last_init": 3e-10, "diag/forward_ratio_init": 1e-9}),
            "vanishing",
            ["no progress", "3e-10 < 0.01"],
        ),
        (
            ev(LN10, **{"diag/ratio_first_last_init": 5.9, "diag/forward_ratio_init": 4e-4}),
            "collapsed",
            ["val loss 2.3 = 1 ln K", "forward spread last/first at init 0.0004 < 0.05"],
        ),
        (ev(LN10, **{"diag/dead_frac_final": 0.8}), "dead", ["0.8 >= 0.5"]),
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
def test_rules_first_match_wins(evidence, label, words):
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
