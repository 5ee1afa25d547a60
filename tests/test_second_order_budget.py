"""second_order's comparison at equal budgets: a Newton step's gradient-equivalents from its recorded
CG iterations and backtracking, seconds without the first (tracing) step, the loss at the smallest
budget any optimizer spent, Newton against each first-order method paired by seed; and the pilot's
learning rates, which second_order.yaml commits."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from study.report import collect
from study.report.sections import second_order as so

ROOT = Path(__file__).resolve().parents[1]
COSTS = {"cnn": {"hvp": 2.5, "forward": 0.4, "commit": "x"}}


def _w(runs: dict[str, tuple[str, int, list[float], list[float]]]) -> pd.DataFrame:
    """run_id -> (optimizer, seed, losses after 0, 1, ... updates, seconds at each epoch's end)."""
    rows = []
    for run, (opt, seed, loss, secs) in runs.items():
        for e, (l, t) in enumerate(zip(loss, secs)):
            rows.append({"run_id": run, "epoch": e, "loss": l, "seconds": t, "optimizer": opt, "seed": seed})
    return pd.DataFrame(rows).assign(model="cnn", lr=0.1)


def _newton_steps(run: str, iters: list[int], scales: list[float]) -> pd.DataFrame:
    rows = []
    for k, (i, t) in enumerate(zip(iters, scales)):
        rows += [
            {"run_id": run, "step": k, "group": "optimizer", "stat": "cg_iterations", "value": i},
            {"run_id": run, "step": k, "group": "optimizer", "stat": "step_scale", "value": t},
        ]
    return pd.DataFrame(rows)


def test_a_newton_step_costs_its_gradient_hvps_and_loss_evaluations_a_first_order_step_one_gradient():
    w = _w(
        {"n": ("newton", 0, [2.3, 1.0, 0.8, 0.7], [9, 10, 11, 12]), "s": ("sgd", 0, [2.3, 2.2, 2.1, 2.0], [1, 2, 3, 4])}
    )
    # full step (1 loss evaluation), halved twice (3), none accepted (backtracks = 8 evaluations)
    steps = _newton_steps("n", [10, 4, 20], [1.0, 0.25, 0.0])
    ge = so.gradient_equivalents(steps, w, COSTS, backtracks=8)
    per = [1 + 10 * 2.5 + 1 * 0.4, 1 + 4 * 2.5 + 3 * 0.4, 1 + 20 * 2.5 + 8 * 0.4]
    np.testing.assert_allclose(ge[w["run_id"] == "n"], np.concatenate([[0], np.cumsum(per)]))
    np.testing.assert_array_equal(ge[w["run_id"] == "s"], [0, 1, 2, 3])
    assert so.gradient_equivalents(steps, w, {}).loc[w["run_id"] == "n"].isna().all()  # no measured costs


def test_seconds_leave_out_the_first_step_and_pair_a_loss_with_the_updates_before_it():
    w = _w({"s": ("sgd", 0, [2.3, 2.2, 2.1, 2.0], [5.0, 5.5, 6.0, 6.5])})
    # the first update traces (5 s): it is counted at the second update's length, 0.5 s
    np.testing.assert_allclose(so.seconds_after_first_step(w), [0, 0.5, 1.0, 1.5])


def test_the_budgets_are_the_smallest_any_optimizer_spent_and_newton_is_compared_paired_by_seed():
    runs = {
        "n0": ("newton", 0, [2.3, 0.9, 0.5, 0.4], [30, 32, 34, 36]),
        "n1": ("newton", 1, [2.3, 1.9, 0.6, 0.5], [30, 32, 34, 36]),
        "s0": ("sgd", 0, [2.3, 2.0, 1.5, 1.2], [1, 2, 3, 4]),
        "s1": ("sgd", 1, [2.3, 1.8, 1.4, 1.1], [1, 2, 3, 4]),
    }
    w = _w(runs)
    w["ge"] = np.where(w["optimizer"] == "newton", w["epoch"] * 3.0, w["epoch"])  # Newton 3 a step
    w["after"] = so.seconds_after_first_step(w)
    t = so.budget_table(w).set_index("optimizer")
    assert t.loc["newton", "ge_budget"] == 3  # sgd's 3 steps: Newton affords one
    assert t.loc["newton", "loss_ge"] == pytest.approx((0.9 + 1.9) / 2)
    assert t.loc["sgd", "loss_ge"] == pytest.approx((1.2 + 1.1) / 2)
    assert t.loc["newton", "t_budget"] == 3  # sgd's 3 steps of 1 s; Newton's 2 s a step affords one
    assert t.loc["newton", "loss_t"] == pytest.approx((0.9 + 1.9) / 2)
    assert t.loc["newton", "loss_steps"] == pytest.approx(0.45)
    # seed 0: Newton 0.9 < 1.2; seed 1: 1.9 > 1.1
    assert t.loc["sgd", "newton_lower"] == "steps 2/2, gradient-equivalents 1/2, seconds 1/2"


def test_step_costs_read_the_benchmark_file(tmp_path):
    f = tmp_path / "curvature.json"
    r = {"second_order_cnn": {"hvp_over_gradient": 2.6, "forward_over_gradient": 0.35}, "grid_cnn_d8": {}}
    f.write_text(json.dumps({"results": r, "machine": {"git_commit": "abcdef123"}}))
    assert so.step_costs(f) == {"cnn": {"hvp": 2.6, "forward": 0.35, "commit": "abcdef1"}}
    assert so.step_costs(tmp_path / "missing.json") == {}


def test_second_order_commits_the_rates_its_committed_pilot_chooses():
    text = (ROOT / "conf" / "experiment" / "second_order.yaml").read_text()
    names = set(re.findall(r"reports/(second_order_pilot-[0-9]{8}-[0-9]{6}-[0-9a-f]{6})", text))
    if not names:
        pytest.skip("second_order.yaml names no committed pilot yet")
    (name,) = names
    c = collect.from_folder(ROOT / "reports" / name).cells
    chosen = so.pilot_choice(c)
    want = {}
    for r in chosen[chosen["chosen"]].itertuples():
        want.setdefault(r.optimizer, {})[r.model] = float(r.lr_scale)
    assert yaml.safe_load(text)["so_lr_scale"] == want
    assert not chosen[chosen["chosen"]]["note"].str.startswith("edge").any()
    assert not set(c["seed"]) & {0, 1, 2}  # chosen on a seed the comparison does not use


def test_timed_steps_replace_the_training_time_and_its_curvature_subtraction():
    epochs = pd.DataFrame(
        [
            {"run_id": r, "epoch": e, "metric": m, "value": v, "steps_per_epoch": 1, "optimizer": "sgd", "model": "cnn"}
            for r, timed in (("timed", True), ("untimed", False))
            for e in range(3)
            for m, v in (("train/loss", 2.0 - e), ("time/elapsed_s", 10.0 * (e + 1)))
            + ((("time/steps_s", 1.0 * (e + 1)),) if timed else ())
        ]
    )
    curv = pd.DataFrame(
        [{"run_id": r, "step": s, "stat": "seconds", "value": 2.0} for r in ("timed", "untimed") for s in (0, 1, 2)]
    )
    w = so.loss_by_step(epochs, curv).set_index(["run_id", "epoch"])["seconds"]
    assert w["timed"].tolist() == [1.0, 2.0, 3.0]  # the timer already leaves the measurements out
    assert w["untimed"].tolist() == [8.0, 16.0, 24.0]  # 10 s an epoch minus the λ_max at steps before its end


def test_adams_top_multiple_is_an_edge_and_unmeasured_pairs_are_not_counted():
    rows = [
        {
            "model": "cnn",
            "optimizer": opt,
            "lr_scale": x,
            "seed": 100,
            "lr": x,
            "num_classes": 10,
            "train/loss": 2.0 - x,
            "outcome": "finished",
        }
        for opt in ("sgd", "adam")
        for x in (0.25, 1.0)
    ]
    chosen = so.pilot_choice(pd.DataFrame(rows))
    notes = chosen[chosen["chosen"]].set_index("optimizer")["note"]
    assert notes["sgd"] == so.AT_LIMIT and notes["adam"].startswith("edge")
    runs = {"n0": ("newton", 0, [2.3, 0.9], [30, 32]), "s0": ("sgd", 0, [2.3, 2.0], [1, 2])}
    w = _w(runs)
    w["ge"] = np.where(w["optimizer"] == "newton", np.nan, w["epoch"])  # Newton's costs not measured
    w["after"] = so.seconds_after_first_step(w)
    said = so.budget_table(w).set_index("optimizer").loc["sgd", "newton_lower"]
    assert said == "steps 1/1, gradient-equivalents n/a, seconds 0/1"


def test_newton_is_called_lower_only_where_the_share_of_seed_pairs_the_rule_fixes_agrees():
    assert so.decide(3, 3, 1.0) == "Newton lower (3/3)"
    assert so.decide(0, 3, 1.0) == "Newton not lower (0/3)"
    assert so.decide(2, 3, 1.0) == "split (2/3)"
    assert so.decide(2, 3, 0.6) == "Newton lower (2/3)"
    assert so.decide(0, 0, 1.0) == "not measured"
    runs = {
        "n0": ("newton", 0, [2.3, 0.9], [30, 32]),
        "n1": ("newton", 1, [2.3, 1.9], [30, 32]),
        "s0": ("sgd", 0, [2.3, 1.2], [1, 2]),
        "s1": ("sgd", 1, [2.3, 1.1], [1, 2]),
    }
    w = _w(runs)
    w["ge"], w["after"] = w["epoch"].astype(float), w["epoch"].astype(float)
    md = so.verdicts_md(so.budget_table(w), 1.0)
    assert "| cnn | sgd | split (1/2) | split (1/2) | split (1/2) |" in md
