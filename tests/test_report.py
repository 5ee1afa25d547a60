"""The report from real sweeps: every table and figure, partial sweeps, determinism."""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, assert_no_healthy_at_chance, run_cli, runs

pytestmark = pytest.mark.slow
FIGURES = (
    "accuracy_heatmap",
    "accuracy_vs_depth",
    "gradient_profile",
    "ratio_vs_depth",
    "loss_curves",
    "saturation",
    "backprop_histograms",
    "gradient_heatmap",
)


def make_report(store_dir, out, *extra):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_report.py"),
            "--tracking-uri",
            f"sqlite:///{store_dir}/mlflow.db",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


def test_report_of_a_smoke_sweep_has_every_table_and_figure(smoke_store):
    store, _ = smoke_store
    out = make_report(store, store / "report")
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 5000, name
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert len(cells) == 8 and set(cells["outcome"]) == {"finished"}
    assert {
        "activation",
        "optimizer",
        "depth",
        "seed",
        "test/accuracy",
        "verdict",
        "diag/ratio_first_last_init",
    } <= set(cells.columns)
    epochs = pd.read_parquet(out / "tables" / "epochs.parquet")
    assert len(epochs) == 8 * 3 * 6  # cells × epochs × (train/val loss/accuracy, learning rate, elapsed time)
    steps = pd.read_parquet(out / "tables" / "steps.parquet")
    assert {"step", "layer", "layer_index", "stat", "value", "activation", "depth"} <= set(steps.columns)
    assert set(steps["group"]) == {"global", "grad", "weight", "backprop", "act"}
    hist = pd.read_parquet(out / "tables" / "histograms.parquet")
    assert set(hist["quantity"]) == {"activation", "backprop", "weight_grad"} and set(hist["epoch"]) == {0, 3}
    text = (out / "REPORT.md").read_text()
    assert all(f"figures/{n}.png" in text for n in FIGURES) and "Skipped" not in text
    assert "| relu | adam |" in text and "8 cells: 8 finished" in text and "**Question.** Does the harness" in text
    assert str(store) not in text and "sqlite:///<elsewhere>/mlflow.db" in text  # no machine paths


def test_report_tables_are_identical_across_two_runs(smoke_store, tmp_path):
    store, _ = smoke_store
    a = make_report(store, tmp_path / "a", "--no-log")
    b = make_report(store, tmp_path / "b", "--no-log")
    assert (a / "tables" / "cells.csv").read_bytes() == (b / "tables" / "cells.csv").read_bytes()
    for name in ("epochs", "steps", "histograms"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(a / "tables" / f"{name}.parquet"), pd.read_parquet(b / "tables" / f"{name}.parquet")
        )
    assert (a / "REPORT.md").read_text().replace(str(a), "") == (b / "REPORT.md").read_text().replace(str(b), "")


def test_partial_sweep_with_failed_diverged_and_missing_cells_still_reports(tmp_path):
    proc = run_cli(
        [
            "-m",
            "experiment=smoke",
            "model.activation=leaky_relu,sigmoid",
            "optimizer=sgd",
            "optimizer.learning_rate=0.05,1e4",
            "model.depth=2,3",
            "train.epochs=2",
            "+train.callbacks=[{_target_:helpers.FailOnDepth,depth:3}]",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode != 0  # failed cells make the sweep exit non-zero, after recording everything
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (gone,) = [
        r
        for r in runs(client)
        if r.info.run_name == "sigmoid-sgd-d2-s0" and r.data.params["optimizer.learning_rate"] == "0.05"
    ]
    client.delete_run(gone.info.run_id)  # a cell lost from the store: the report shows it as missing
    assert_no_healthy_at_chance(f"sqlite:///{tmp_path}/mlflow.db")
    out = make_report(tmp_path, tmp_path / "report")
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert (cells["outcome"] == "failed").sum() == 4 and (cells["outcome"] == "diverged").sum() >= 1
    assert (cells["outcome"] == "missing").sum() == 1 and len(cells) == 8
    text = (out / "REPORT.md").read_text()
    assert "failed" in text and "diverged" in text
    assert "Skipped" in text  # default diagnostics: no activation statistics, no histograms
    assert (out / "figures" / "accuracy_heatmap.png").exists() and not (out / "figures" / "saturation.png").exists()


def test_report_of_a_sweep_where_no_cell_finished(tmp_path):
    proc = run_cli(
        [
            "-m",
            "experiment=smoke",
            "model.activation=relu",
            "optimizer=adam",
            "model.depth=2",
            "train.epochs=1",
            "+train.callbacks=[{_target_:helpers.FailOnDepth,depth:2}]",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode != 0 and "1 cell(s) failed" in proc.stdout + proc.stderr
    out = make_report(tmp_path, tmp_path / "report")
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert list(cells["outcome"]) == ["failed"] and list(cells["verdict"]) == ["unknown"]
    text = (out / "REPORT.md").read_text()
    assert "1 cells: 1 failed" in text and "relu-adam-d2-s0" in text
