"""The report from real sweeps: every table and figure, partial sweeps, determinism."""

import shutil

import pandas as pd
import pytest
from helpers.commands import run_main, run_report
from helpers.mlflow_queries import assert_no_healthy_at_chance, runs
from mlflow.tracking import MlflowClient

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
    proc = run_report(["--tracking-uri", f"sqlite:///{store_dir}/mlflow.db", "--out", str(out), *extra], store_dir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


@pytest.mark.xdist_group("smoke")
def test_report_of_a_smoke_sweep_has_every_table_and_figure_and_is_the_same_when_made_again(smoke_store, tmp_path):
    store, _ = smoke_store
    out = make_report(store, store / "report", "--formats", "png,pdf")  # as make report writes them
    shutil.copytree(out, tmp_path / "again")  # a report made before: the new one replaces it whole
    (tmp_path / "again" / "figures" / "stale.png").write_bytes(b"old")
    again = make_report(store, tmp_path / "again", "--no-log")
    assert not (again / "figures" / "stale.png").exists() and (again / ".study-report").is_file()
    redrawn = tmp_path / "redrawn"  # from the folder alone, without the store: the same tables
    proc = run_report(["--from", str(out), "--out", str(redrawn)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for table in (out / "tables").iterdir():
        assert (redrawn / "tables" / table.name).read_bytes() == table.read_bytes(), table.name
    assert (out / "tables" / "cells.csv").read_bytes() == (again / "tables" / "cells.csv").read_bytes()
    for name in ("epochs", "steps", "histograms"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / "tables" / f"{name}.parquet"), pd.read_parquet(again / "tables" / f"{name}.parquet")
        )
    assert (out / "REPORT.md").read_text().replace(str(out), "") == (again / "REPORT.md").read_text().replace(
        str(again), ""
    )
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
    # report.html: the same report in one self-contained page, logged on the parent run beside REPORT.md
    page = (out / "report.html").read_text()
    assert 'src="figures/' not in page and page.count('src="data:image/png;base64,') == text.count("](figures/")
    assert page.count("<table>") >= 2 and "<h2>Figures</h2>" in page and "8 cells: 8 finished" in page
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (parent,) = [r for r in runs(client) if r.data.tags.get("role") == "sweep"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/REPORT.md", "report/figures", "report/tables"} <= logged


def test_partial_sweep_with_failed_diverged_and_missing_cells_still_reports(tmp_path, store):
    proc = run_main(
        [
            "-m",
            "experiment=smoke",
            "model.activation=leaky_relu,sigmoid",
            "optimizer=sgd",
            "optimizer.learning_rate=0.05,1e4",
            "model.depth=2,3",
            "train.epochs=1",
            "+train.callbacks=[{_target_:helpers.callbacks.FailOnDepth,depth:3}]",
            "tracking.run_name=${model.activation}-${optimizer.name}-d${model.depth}-s${seed}-lr${optimizer.learning_rate}",
            f"tracking.uri={store[0]}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode != 0  # failed cells make the sweep exit non-zero, after recording everything

    client = store[1]
    (gone,) = [r for r in runs(client) if r.info.run_name == "sigmoid-sgd-d2-s0-lr0.05"]
    client.delete_run(gone.info.run_id)  # a cell lost from the store: the report shows it as missing
    assert_no_healthy_at_chance(store[0])
    out = make_report(tmp_path, tmp_path / "report")
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert (cells["outcome"] == "failed").sum() == 4 and (cells["outcome"] == "diverged").sum() >= 1
    assert (cells["outcome"] == "missing").sum() == 1 and len(cells) == 8
    text = (out / "REPORT.md").read_text()
    assert "failed" in text and "diverged" in text
    assert "Skipped" in text  # default diagnostics: no activation statistics, no histograms
    assert (out / "figures" / "accuracy_heatmap.png").exists() and not (out / "figures" / "saturation.png").exists()


def test_report_of_a_sweep_where_no_cell_finished(tmp_path, store):
    proc = run_main(
        [
            "-m",
            "experiment=smoke",
            "model.activation=relu",
            "optimizer=adam",
            "model.depth=2",
            "train.epochs=1",
            "+train.callbacks=[{_target_:helpers.callbacks.FailOnDepth,depth:2}]",
            f"tracking.uri={store[0]}",
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


def test_report_of_single_runs_and_of_runs_that_all_diverged(make_cfg, store, tmp_path):
    from study.train import train

    train(make_cfg("seed=1"))
    train(
        make_cfg(
            "optimizer=sgd", "optimizer.learning_rate=1e4", "model.activation=leaky_relu", "tracking.cell_figures=true"
        )
    )
    by_outcome = {r.data.tags["outcome"]: r.info.run_id for r in runs(store[1])}
    assert set(by_outcome) == {"finished", "diverged"}
    # a diverged cell's own figures are drawn from its non-finite values too; the other cell drew none
    figs = {a.path for a in store[1].list_artifacts(by_outcome["diverged"], "figures")}
    assert figs == {"figures/curves.png", "figures/gradients.png", "figures/signal.png"}
    assert store[1].list_artifacts(by_outcome["finished"], "figures") == []
    store_dir = tmp_path  # the `store` fixture's mlflow.db is in tmp_path
    out = make_report(store_dir, tmp_path / "single", "--single")  # no parent run: nothing is logged back
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert sorted(cells["outcome"]) == ["diverged", "finished"]
    text = (out / "REPORT.md").read_text()
    assert "# Report of runs single-" in text and "2 run(s) without a sweep" in text and "--single`" in text
    out = make_report(store_dir, tmp_path / "diverged", "--run", by_outcome["diverged"])
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert list(cells["outcome"]) == ["diverged"] and list(cells["verdict"]) == ["diverged"]
    text = (out / "REPORT.md").read_text()
    assert "1 cells: 1 diverged" in text and f"--run {by_outcome['diverged']}" in text
    bad = run_report(["--tracking-uri", store[0], "--run", "nope"], tmp_path)
    assert bad.returncode != 0 and "no run 'nope' in this store" in bad.stderr and "Traceback" not in bad.stderr


def test_a_sweep_with_three_seeds_reports_means_and_t_intervals(tmp_path, store):
    proc = run_main(
        [
            "-m",
            "experiment=smoke",
            "model.activation=relu,sigmoid",
            "optimizer=adam",
            "model.depth=2",
            "seed=0,1,2",
            "train.epochs=1",
            "diagnostics=default",
            f"tracking.uri={store[0]}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = make_report(tmp_path, tmp_path / "report", "--no-log")
    cells = pd.read_csv(out / "tables" / "cells.csv")
    summ = pd.read_csv(out / "tables" / "summary.csv")
    assert len(cells) == 6 and len(summ) == 2 and list(summ["n"]) == [3, 3]  # one row per run; per cell
    for _, row in summ.iterrows():  # the interval recomputed from the runs' own accuracies
        acc = cells[cells["activation"] == row["activation"]]["test/accuracy"]
        half = 4.302652729911275 * acc.std(ddof=1) / 3**0.5
        assert row["mean"] == pytest.approx(acc.mean(), rel=1e-5)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((acc.mean() - half, acc.mean() + half), rel=1e-4)
    text = (out / "REPORT.md").read_text()
    assert "## Mean over seeds" in text and "95 % t interval" in text and "Error bars: 95 % t interval" in text
    assert ("intervals separate" in text) != ("not resolved with n=3 seeds" in text)  # the caption decides one way
