"""The grid's learning rates come from the committed pilot: the rule that chooses them, and the
table conf/experiment/grid.yaml commits against what the committed pilot report's own cells choose."""

import math
import re
from pathlib import Path

import pandas as pd
import yaml

from study.report import collect
from study.report.sections import grid_pilot as pilot

ROOT = Path(__file__).resolve().parents[1]


def _cells(losses: dict[float, list[float]], optimizer="sgd", arm="relu_he", depth=8, k=10) -> pd.DataFrame:
    rows = []
    for scale, per_seed in losses.items():
        for seed, loss in enumerate(per_seed):
            rows.append(
                {
                    "activation": arm,
                    "optimizer": optimizer,
                    "depth": depth,
                    "seed": 100 + seed,
                    "lr_scale": scale,
                    "lr": 0.05 * scale,
                    "num_classes": k,
                    "outcome": "diverged" if math.isnan(loss) else "finished",
                    "val/loss": loss,
                }
            )
    return pd.DataFrame(rows)


def _pick(c: pd.DataFrame) -> tuple[float, str]:
    (row,) = pilot.choose(c).query("chosen").itertuples()
    return row.lr_scale, row.note


def test_the_pilot_picks_the_lowest_mean_loss_over_seeds_and_says_when_it_is_at_the_edge():
    # seed 100 alone would pick ×3; the mean over both seeds picks ×1
    assert _pick(_cells({0.3: [1.9, 1.9], 1: [1.2, 1.3], 3: [1.1, 1.7], 10: [2.0, 2.1]})) == (1, "interior")
    assert _pick(_cells({0.3: [1.9, 1.9], 1: [1.5, 1.5], 3: [1.2, 1.2]})) == (3, "edge: widen the range")
    # a seed that diverged makes that multiple worse than any finite one
    assert _pick(_cells({0.3: [1.9, 1.9], 1: [1.5, 1.5], 3: [0.9, float("nan")], 10: [2.2, 2.2]})) == (1, "interior")
    # nothing trains (all near ln 10 = 2.303): the loss says nothing about the rate, the default is kept
    flat = _cells({0.3: [2.302, 2.303], 1: [2.303, 2.303], 3: [2.301, 2.302]})
    assert _pick(flat) == (1, "flat: no multiple trains, ×1 kept")


def test_the_table_is_nested_by_arm_optimizer_and_depth():
    c = pd.concat(
        [
            _cells({1: [1.2, 1.2], 3: [1.0, 1.0], 10: [1.5, 1.5]}, depth=8),
            _cells({0.3: [1.3, 1.3], 1: [1.1, 1.1], 3: [1.6, 1.6]}, depth=16),
        ]
    )
    assert pilot.table(pilot.choose(c)) == {"relu_he": {"sgd": {"d8": 3.0, "d16": 1.0}}}
    assert yaml.safe_load(pilot.snippet(pilot.choose(c))) == {
        "tuned_lr_scale": {"relu_he": {"sgd": {"d8": 3, "d16": 1}}}
    }


def test_the_grid_commits_the_rates_the_committed_pilot_chooses_and_none_is_at_the_edge():
    text = (ROOT / "conf" / "experiment" / "grid.yaml").read_text()
    (name,) = set(re.findall(r"reports/(grid_pilot-[0-9]{8}-[0-9]{6}-[0-9a-f]{6})", text))  # the pilot it names
    chosen = pilot.choose(collect.from_folder(ROOT / "reports" / name).cells)
    assert yaml.safe_load(text)["tuned_lr_scale"] == pilot.table(chosen)
    assert not chosen[chosen["chosen"]]["note"].str.startswith("edge").any()
    assert chosen.groupby(["activation", "optimizer", "depth"])["seeds"].min().min() >= 2  # seeds per rate
    grid_seeds = yaml.safe_load(text)["hydra"]["sweeper"]["params"]["seed"]
    assert not set(chosen["seed"] if "seed" in chosen else []) & set(map(int, str(grid_seeds).split(",")))
