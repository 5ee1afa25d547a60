"""grid_reference: the 96-step ranking read from the long runs' own epoch table, beside the end."""

import pandas as pd

from study.report.sections import reference


def test_the_budget_row_is_the_epoch_ending_at_step_96_and_ranks_and_levelling_follow_the_rule():
    cells = pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "activation": ["relu_he", "tanh_glorot"],
            "optimizer": "adam",
            "lr": 0.003,
            "steps_per_epoch": 32,
            "test/accuracy": [0.80, 0.85],
        }
    )
    rows = []
    for run, fast in (("a", True), ("b", False)):
        for epoch in range(12):
            acc = (0.6 if fast else 0.3) if epoch < 3 else (0.78 if fast else 0.84)
            loss = 1.0 if fast else 2.0 - 0.1 * epoch  # a: flat (levelled); b: still falling
            for metric, v in (("val/accuracy", acc), ("val/loss", loss), ("train/loss", loss)):
                rows.append({"run_id": run, "epoch": epoch, "metric": metric, "value": v})
    t = reference.at_budget_and_end(cells, pd.DataFrame(rows)).set_index("activation")
    assert t.loc["relu_he", "budget_steps"] == 96 and t.loc["relu_he", "steps"] == 384
    assert (t.loc["relu_he", "val_acc_96"], t.loc["tanh_glorot", "val_acc_96"]) == (0.6, 0.3)
    assert (t.loc["relu_he", "rank_96"], t.loc["relu_he", "rank_end"]) == (1, 2)  # the early leader falls behind
    assert bool(t.loc["relu_he", "levelled"]) and not bool(t.loc["tanh_glorot", "levelled"])


def test_optimizer_orders_say_per_arm_whether_the_budget_order_holds_at_the_end():
    t = pd.DataFrame(
        {
            "activation": ["tanh", "tanh", "relu", "relu"],
            "optimizer": ["adam", "sgd", "adam", "sgd"],
            "val_acc_96": [0.7, 0.5, 0.6, 0.4],
            "val_acc_end": [0.8, 0.85, 0.9, 0.7],
        }
    )
    said = reference.optimizer_orders(t)
    assert "tanh: adam > sgd → sgd > adam." in said and "relu: adam > sgd → adam > sgd (same)" in said
    tied = t.assign(val_acc_end=[0.8, 0.8, 0.9, 0.7])  # tanh's two end at the same accuracy
    assert "tanh: adam > sgd → adam = sgd." in reference.optimizer_orders(tied)
