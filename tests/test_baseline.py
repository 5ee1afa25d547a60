"""A new sweep's cells beside a committed baseline's: matched by arm, depth and seed, refused when
data or budget differ, paired by seed."""

import json

import pandas as pd
import pytest
from helpers.commands import run_report

from study.errors import ConfigError
from study.report import baseline, collect, stats


def sweep(optimizer, accs, overrides=(), batch_size="128", epochs=3, seeds=(0, 1, 2)):
    cells = pd.DataFrame(
        {
            "run_id": [f"{optimizer}-{s}" for s in seeds],
            "run_name": [f"relu-{optimizer}-d4-s{s}" for s in seeds],
            "outcome": "finished",
            "activation": "relu_he",
            "optimizer": optimizer,
            "depth": 4,
            "seed": list(seeds),
            "dataset": "fashion_mnist",
            "batch_size": batch_size,
            "steps_per_epoch": 32,
            "test/accuracy": list(accs) * (len(seeds) if len(accs) == 1 else 1),
        }
    )
    epochs_table = pd.DataFrame(
        [
            {"run_id": r, "metric": "train/loss", "epoch": e, "value": 1.0, "optimizer": optimizer}
            for r in cells["run_id"]
            for e in range(epochs)
        ]
    )
    info = {"sweep_id": optimizer, "overrides": json.dumps(list(overrides))}
    return collect.Sweep(info, cells, epochs_table, pd.DataFrame(), pd.DataFrame())


def test_a_new_optimizer_is_drawn_beside_the_baseline_and_compared_paired_by_seed():
    base = sweep("adam", [0.60, 0.62, 0.64])
    new = sweep("lion", [0.65, 0.66, 0.70], overrides=["experiment=grid", "optimizer=lion"], seeds=(0, 1, 2))
    merged = baseline.merge(new, base, "reports/grid-x")
    assert sorted(merged.cells["source"]) == ["baseline"] * 3 + ["new"] * 3
    assert set(merged.epochs["source"]) == {"baseline", "new"} and merged.info["baseline"] == "reports/grid-x"
    (row,) = baseline.paired(merged.cells).itertuples()
    assert (row.new, row.baseline, row.seeds, row.above, row.below) == ("lion", "adam", 3, 3, 0)
    t = 0.05 / (0.01 / 3**0.5)  # mean and sd of the differences over sqrt(n); two-sided, 2 degrees of freedom
    assert row.differences == "+0.050 +0.040 +0.060" and row.p == pytest.approx(1 - t / (t * t + 2) ** 0.5)
    assert row.test == "paired t" and row.resolved
    # rule 3 as everywhere else: a split cell gets the sign test, two untrained cells no test
    split = merged.cells.assign(trained=merged.cells["seed"] != 1)
    assert baseline.paired(split).iloc[0]["test"] == "sign test"
    (none,) = baseline.paired(merged.cells.assign(trained=False)).itertuples()
    assert none.test == stats.UNTRAINED and not none.resolved


def test_a_key_no_label_shows_marks_the_new_cells_and_only_matching_baseline_cells_are_kept():
    base = sweep("adam", [0.60, 0.62, 0.64])
    new = sweep("adam", [0.5], overrides=["model.pooling=average", "tracking.uri=sqlite:///x"], seeds=(1,))
    merged = baseline.merge(new, base, "b")
    assert list(merged.cells["optimizer"]) == ["adam", "adam (average)"]  # seed 1 only from the baseline
    assert merged.info["baseline_marked"] == "model.pooling=average"
    with pytest.raises(ConfigError, match="the baseline's own"):
        baseline.merge(sweep("adam", [0.6, 0.62, 0.64]), base, "b")


@pytest.mark.parametrize(
    "changed, says",
    [
        ({"batch_size": "64"}, r"batch_size \['128'\] \(baseline\) against \['64'\]"),
        ({"epochs": 5}, r"epochs \[3\] \(baseline\) against \[5\]"),
        ({"seeds": (3,)}, r"has no cells for \(arm, depth, seed\) relu_he/4/3: 1 missing"),
    ],
    ids=["batch-size", "epochs", "seed"],
)
def test_a_baseline_that_differs_in_data_budget_or_cells_is_refused_naming_it(changed, says):
    with pytest.raises(ConfigError, match=says):
        baseline.merge(sweep("lion", [0.7], **changed), sweep("adam", [0.6, 0.6, 0.6]), "b")


@pytest.mark.slow
@pytest.mark.xdist_group("smoke")
def test_the_report_refuses_a_mismatched_baseline_in_one_line(smoke_store, tmp_path):
    store, _ = smoke_store
    uri = f"sqlite:///{store}/mlflow.db"
    base = tmp_path / "base"
    assert run_report(["--tracking-uri", uri, "--out", str(base), "--no-log"], tmp_path).returncode == 0
    cells = pd.read_csv(base / "tables" / "cells.csv")
    cells["batch_size"] = 32  # as if the baseline had trained with another batch size
    cells.to_csv(base / "tables" / "cells.csv", index=False)
    proc = run_report(["--tracking-uri", uri, "--baseline", str(base), "--out", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "differs from this sweep in data or budget: batch_size ['32'] (baseline) against ['64']" in proc.stderr
