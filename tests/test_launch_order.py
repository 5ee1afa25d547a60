"""Launch order of a sweep's cells: most expensive first (study/launch_order.py)."""

import pytest
from helpers.commands import ROOT

from study.errors import ConfigError
from study.launch_order import SWEEP_CALLBACK, checks_every_cell, estimated_cost, order_cells


def test_deeper_cells_launch_first_and_ties_keep_the_written_order():
    cells = [[f"model.activation={a}", f"model.depth={d}"] for a in ("relu", "tanh") for d in (2, 16, 4)]
    assert order_cells(cells) == [
        ["model.activation=relu", "model.depth=16"],
        ["model.activation=tanh", "model.depth=16"],
        ["model.activation=relu", "model.depth=4"],
        ["model.activation=tanh", "model.depth=4"],
        ["model.activation=relu", "model.depth=2"],
        ["model.activation=tanh", "model.depth=2"],
    ]
    assert order_cells(cells, "as_written") == cells


def test_cost_grows_with_depth_epochs_examples_and_width_squared_and_falls_with_batch_size():
    assert estimated_cost(["model.depth=8"]) == pytest.approx(2 * estimated_cost(["model.depth=4"]))
    assert estimated_cost(["model.width=16"]) == pytest.approx(4 * estimated_cost(["model.width=8"]))
    assert estimated_cost(["train.epochs=6", "data.train_subset=1024"]) == pytest.approx(
        3 * estimated_cost(["train.epochs=4", "data.train_subset=512"])
    )
    batches = [["train.batch_size=full"], ["train.batch_size=32"], ["train.batch_size=1"]]
    assert order_cells(batches) == batches[::-1]
    # width 16 at depth 2 does more work than width 8 at depth 4
    assert order_cells([["model.depth=4", "model.width=8"], ["model.depth=2", "model.width=16"]])[0] == [
        "model.depth=2",
        "model.width=16",
    ]


def test_cells_without_cost_keys_keep_the_written_order():
    cells = [["optimizer=sgd", "schedule=cosine"], ["optimizer=adam", "schedule=constant"], ["optimizer=sgd", "seed=3"]]
    assert order_cells(cells) == cells


def test_an_unknown_order_names_the_valid_choices():
    with pytest.raises(ConfigError, match="unknown hydra.sweeper.order 'longest'.*as_written, cost"):
        order_cells([["model.depth=2"]], "longest")


def test_the_sweep_callback_is_found_in_the_config_by_its_target():
    """The sweeper skips Hydra's second composition of each cell only when the callback that
    composes and checks them all runs (conf/config.yaml), and falls back to Hydra's without it."""
    from hydra import compose, initialize_config_dir

    from study.sweep import MlflowSweepCallback

    assert SWEEP_CALLBACK == f"{MlflowSweepCallback.__module__}.{MlflowSweepCallback.__qualname__}"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        assert checks_every_cell(compose("config", return_hydra_config=True))
        assert not checks_every_cell(compose("config", ["~hydra.callbacks.mlflow_sweep"], return_hydra_config=True))


def test_the_eta_is_the_time_per_cost_begun_times_the_cost_left():
    from study.launch_order import eta, progress

    costs = [16.0, 8.0, 4.0, 4.0]  # launch order, most expensive first
    assert eta(120.0, costs, 1) == 120.0 / 16 * 16  # 16 of 32 begun in 120 s: 120 s left
    assert eta(180.0, costs, 3) == 180.0 / 28 * 4
    assert eta(0.0, costs, 0) is None and eta(10.0, costs, 0) is None
    assert progress(1, 4, 1000.0, costs, 1120.0) == "[cell 2/4] (2:00 elapsed, ETA 2:00) "
    assert progress(0, 4, 1000.0, costs, 1000.5) == "[cell 1/4] (0:00 elapsed, ETA ?) "
    assert progress(2, 3, None, None, 5.0) == "[cell 3/3] "
    assert progress(3, 4, 0.0, costs, 4000.0).endswith("(1:06:40 elapsed, ETA 9:31) ")
