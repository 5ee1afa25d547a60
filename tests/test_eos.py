"""The edge-of-stability rules (study/report/sections/second_order.py): each run classed before its
first update by λ_max(0) against 2/η, the edge entered at the first step past reach·2/η, the median
taken from there on, and the control's own criterion, on hand-made sharpness curves."""

import numpy as np
import pandas as pd
import pytest

from study.report.sections.second_order import EOS_DEFAULTS, eos_regime, eos_table

RULES = {**EOS_DEFAULTS, "controls": [0.02]}
STEPS = np.arange(0, 1501, 25)


def _run(run_id: str, lr: float, lam: np.ndarray, loss: np.ndarray, seed: int = 0):
    cells = pd.DataFrame([{"run_id": run_id, "run_name": f"eos-lr{lr}-s{seed}", "lr": lr, "seed": seed}])
    curv = pd.concat(
        [
            pd.DataFrame({"run_id": run_id, "step": STEPS, "stat": "lambda_max", "value": lam}),
            pd.DataFrame({"run_id": run_id, "step": STEPS, "stat": "two_over_lr", "value": 2 / lr}),
        ]
    )
    w = pd.DataFrame({"run_id": run_id, "step": np.arange(1501, dtype=float), "loss": loss})
    return cells, curv, w


def _table(*runs):
    cells, curv, w = (pd.concat(parts, ignore_index=True) for parts in zip(*runs))
    return eos_table(cells, curv, w, RULES).set_index("run")


FALLING = np.linspace(0.09, 0.01, 1501)


def test_sharpening_enters_the_edge_at_its_first_step_past_reach_and_is_judged_from_there():
    # rises from 8 to 2/η = 10 at step 500, then hovers at 1.03 × 2/η: the old "last third" rule and
    # this one agree here, but only this one reports the step
    lam = np.where(STEPS < 500, 8 + 1.4 * STEPS / 500, 10.3)  # 9.4 < 0.95 · 10 until step 500
    t = _table(_run("a", 0.2, lam, FALLING))
    r = t.iloc[0]
    assert r["regime"] == "sharpening" and r["entry_step"] == 500
    assert r["ratio_after_entry"] == pytest.approx(1.03) and r["met"]


def test_a_late_approach_is_not_averaged_into_the_ceiling():
    # reaches 0.95·2/η only at step 1,300; before that λ_max is far below: the median after entry is
    # the hover (13.3), where the last third's median (steps 1,000-1,500) would mix in the approach
    lam = np.where(STEPS < 1300, 8 + 4 * STEPS / 1300, 13.3)
    r = _table(_run("a", 0.15, lam, FALLING)).iloc[0]
    assert r["entry_step"] == 1300 and r["ratio_after_entry"] == pytest.approx(13.3 / (2 / 0.15))
    last_third = np.median(lam[STEPS >= 1000]) / (2 / 0.15)
    assert last_third < r["ratio_after_entry"] - 0.05


def test_a_start_above_two_over_eta_is_a_catapult_judged_on_its_fall_not_counted_as_sharpening():
    # η = 0.5: λ_max(0) = 8 is twice 2/η = 4; it falls to 4.2 by step 100 and stays
    lam = np.where(STEPS < 100, 8.0, 4.2)
    r = _table(_run("a", 0.5, lam, FALLING)).iloc[0]
    assert r["regime"] == "catapult" and r["entry_step"] == 100 and r["met"]
    assert eos_regime(8.0, 4.0, 0.5, RULES) == "catapult" and eos_regime(8.0, 10.0, 0.2, RULES) == "sharpening"


def test_the_control_must_keep_rising_below_the_edge():
    rising = 8 + 4 * STEPS / 1500  # 8 → 12, far below 2/η = 100
    levelled = np.minimum(8 + 4 * STEPS / 500, 12.0)  # stops rising a third of the way in
    t = _table(_run("rise", 0.02, rising, FALLING), _run("flat", 0.02, levelled, FALLING, seed=1))
    assert (t["regime"] == "control").all() and t["entry_step"].isna().all()
    assert t.loc["eos-lr0.02-s0", "met"] and not t.loc["eos-lr0.02-s1", "met"]


def test_a_run_that_never_reaches_the_edge_or_stops_learning_fails():
    short = 8 + 1 * STEPS / 1500  # 8 → 9 < 0.95 · 10
    flat_loss = np.full(1501, 0.05)
    t = _table(_run("short", 0.2, short, FALLING), _run("stuck", 0.2, np.full(STEPS.size, 9.6), flat_loss, seed=1))
    assert not t.loc["eos-lr0.2-s0", "met"] and np.isnan(t.loc["eos-lr0.2-s0", "ratio_after_entry"])
    stuck = t.loc["eos-lr0.2-s1"]  # at the edge from step 0 (9.6 >= 9.5, below 2/η: sharpening), loss flat
    assert stuck["regime"] == "sharpening" and stuck["entry_step"] == 0
    assert stuck["ratio_after_entry"] == pytest.approx(0.96) and not stuck["met"]


def test_a_control_that_reaches_the_edge_fails_and_shows_where():
    lam = np.minimum(8 + 100 * STEPS / 1500, 99.0)  # η = 0.02: 2/η = 100, reached 0.95 of it at step 1,300
    r = _table(_run("c", 0.02, lam, FALLING)).iloc[0]
    assert r["regime"] == "control" and not r["met"] and r["entry_step"] == 1325 and r["max_ratio"] == 0.99


def test_no_finite_sharpness_at_step_0_is_not_classed_catapult():
    lam = np.r_[np.nan, np.full(STEPS.size - 1, 10.2)]
    r = _table(_run("n", 0.2, lam, FALLING)).iloc[0]
    assert r["regime"] == "undetermined" and not r["met"]


def test_criteria_come_from_the_parent_run_and_a_bad_rule_is_named():
    from study.errors import ConfigError
    from study.report.sections.registry import criteria

    rules, said = criteria({"criteria": '{"reach": 0.9, "controls": [0.01]}'}, EOS_DEFAULTS)
    assert rules == {**EOS_DEFAULTS, "reach": 0.9, "controls": [0.01]} and "recorded on the sweep's parent" in said
    assert criteria({}, EOS_DEFAULTS) == (EOS_DEFAULTS, criteria({}, EOS_DEFAULTS)[1])
    with pytest.raises(ConfigError, match=r"criteria\.rech: unknown .*valid: \['band', 'controls', 'reach'\]"):
        criteria({"criteria": '{"rech": 0.9}'}, EOS_DEFAULTS)
    with pytest.raises(ConfigError, match=r"criteria\.reach='abc' must be float"):
        criteria({"criteria": '{"reach": "abc"}'}, EOS_DEFAULTS)
