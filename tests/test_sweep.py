"""Hydra multiruns into a real SQLite store, run as a user runs them (Hydra's own main, in this process)."""

import re
from pathlib import Path

import pytest
import yaml
from helpers.commands import ROOT, run_main, run_script
from helpers.mlflow_queries import assert_no_healthy_at_chance, assert_one_initial_finding_per_initial_weights, runs

pytestmark = pytest.mark.slow


@pytest.mark.xdist_group("smoke")
def test_smoke_multirun_one_parent_and_eight_finished_children(smoke_store):
    tmp_path, proc = smoke_store
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    all_runs = runs(client)
    parents = [r for r in all_runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in all_runs if r.data.tags.get("role") == "cell"]
    assert len(parents) == 1 and len(children) == 8 and len(all_runs) == 9
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["cells_finished"] == "8"
    cells = set()
    for r in children:
        assert r.info.status == "FINISHED" and r.data.tags["outcome"] == "finished"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        p = r.data.params
        cells.add((p["model.activation"], p["optimizer.name"], p["model.depth"]))
        assert r.info.run_name == f"{p['model.activation']}-{p['optimizer.name']}-d{p['model.depth']}-s0"
        assert {"test/accuracy", "test/loss", "train/loss", "val/accuracy", "time/wall_s"} <= set(r.data.metrics)
        assert {"act/conv_01/mean", "backprop/conv_01/l2", "diag/ratio_first_last_init"} <= set(r.data.metrics)
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {
            "config.yaml",
            "epochs.parquet",
            "diagnostics.parquet",
            "histograms.parquet",
            "figures",
        }
        if r is children[0]:  # each summary logged once (the UI would draw a second value as a line)
            summaries = [k for k in r.data.metrics if k.startswith(("diag/", "test/", "eval_train/"))]
            assert len(summaries) >= 15
            assert {k: len(client.get_metric_history(r.info.run_id, k)) for k in summaries} == dict.fromkeys(
                summaries, 1
            )
        # the cell's own figures, opened from its run in the UI
        pngs = {a.path: a for a in client.list_artifacts(r.info.run_id, "figures")}
        assert set(pngs) == {"figures/curves.png", "figures/gradients.png", "figures/signal.png"}
        where = str(tmp_path / "downloaded" / r.info.run_id)
        local = client.download_artifacts(r.info.run_id, "figures/gradients.png", where)
        assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs["figures/gradients.png"].file_size > 5000
    assert cells == {(a, o, d) for a in ("sigmoid", "relu") for o in ("sgd", "adam") for d in ("2", "4")}
    assert "[cell 8/8]" in proc.stdout and "8 finished" in proc.stdout
    assert assert_no_healthy_at_chance(f"sqlite:///{tmp_path}/mlflow.db") == 8
    # sgd and adam of one activation and depth start from the same weights: one initial finding each
    assert assert_one_initial_finding_per_initial_weights(all_runs) == 4
    # descriptions for the MLflow UI: experiment, parent, every cell
    exp = client.get_experiment_by_name("activation-study")
    assert "gradient verdict" in exp.tags["mlflow.note.content"].lower()
    note = parent.data.tags["mlflow.note.content"]
    assert "preset `smoke`" in note and "8 cells" in note and "8 finished" in note and "report/report.html" in note
    question = yaml.safe_load((ROOT / "conf" / "experiment" / "smoke.yaml").read_text())["question"]
    assert parent.data.tags["question"] == question and f"**Question.** {question}" in note
    assert parent.data.tags["mlflow.source.name"] == "study.train"
    for r in children:
        assert r.data.tags["gradient_verdict"] in r.data.tags["mlflow.note.content"]
        assert "test accuracy" in r.data.tags["mlflow.note.content"]
    link = run_script("ui_link.py", ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], tmp_path)
    assert f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" in link.stdout
    for r in children:
        assert r.data.tags["gradient_verdict"] in {"healthy", "slow", "stalled", "vanishing", "collapsed", "died"}
        assert r.data.tags["verdict_reason"]
    # launched most expensive first: the four depth-4 cells, then the depth-2 ones, each in written order
    starts = re.findall(r"\[cell (\d)/8\] \([^)]*\) (\w+)-(\w+)-d(\d)-s0 start:", proc.stdout)
    assert [s[1:] for s in sorted(starts)] == [
        (a, o, d) for d in ("4", "2") for a in ("sigmoid", "relu") for o in ("sgd", "adam")
    ]


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, store, monkeypatch):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    composed = []  # each cell's config: composed by the sweep callback, then by the launcher
    load = ConfigLoaderImpl.load_sweep_config
    monkeypatch.setattr(
        ConfigLoaderImpl, "load_sweep_config", lambda self, *a, **kw: composed.append(a or kw) or load(self, *a, **kw)
    )
    proc = run_main(
        [
            "-m",
            "experiment=smoke",
            "model.activation=relu",
            "optimizer=adam",
            "model.depth=2,4",
            "train.epochs=1",
            "+train.callbacks=[{_target_:helpers.callbacks.FailOnDepth,depth:2}]",
            f"tracking.uri={store[0]}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert len(composed) == 4, proc.stderr[-3000:]  # not 6: the sweeper does not compose them a third time
    assert (
        proc.returncode != 0
        and "1 cell(s) failed" in proc.stderr + proc.stdout
        and "0 cell(s) not run" in proc.stderr + proc.stdout
    )

    client = store[1]
    by_depth = {r.data.params.get("model.depth"): r for r in runs(client) if r.data.tags.get("role") == "cell"}
    failed, ok = by_depth["2"], by_depth["4"]
    assert failed.info.status == "FAILED" and failed.data.tags["outcome"] == "failed"
    assert "user callback bug at depth 2" in failed.data.tags["error"]
    trace = client.download_artifacts(failed.info.run_id, "traceback.txt")
    assert "RuntimeError: user callback bug at depth 2" in open(trace).read()
    assert ok.info.status == "FINISHED" and "test/accuracy" in ok.data.metrics  # ran after the failure
    (parent,) = [r for r in runs(client) if r.data.tags.get("role") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["cells_failed"] == "1"


def test_an_invalid_cell_stops_the_sweep_before_any_training(tmp_path):
    proc = run_main(
        [
            "-m",
            "experiment=smoke",
            "model.activation=relu,reluu",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode != 0
    assert "unknown activation 'reluu'" in proc.stderr and "valid choices" in proc.stderr
    assert "start:" not in proc.stdout


def test_an_unknown_launch_order_stops_the_sweep_before_the_parent_run(tmp_path):
    proc = run_main(
        [
            "-m",
            "experiment=smoke",
            "hydra.sweeper.order=longest",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode != 0
    assert "unknown hydra.sweeper.order 'longest'; valid choices: as_written, cost" in proc.stderr
    assert "[sweep" not in proc.stdout and "start:" not in proc.stdout


def test_a_cell_too_big_for_its_data_stops_the_sweep_before_any_training(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for bad, said in (
        ("train.batch_size=64,100000", "train.batch_size=100000 is larger than the training set (691 examples"),
        ("data.train_subset=100,5000", "data.train_subset=5000 must be between 1 and 691"),
    ):
        proc = run_main(["-m", "experiment=smoke", "model.depth=2", bad, f"tracking.uri={uri}"], tmp_path)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr[-2000:]
        assert "start:" not in proc.stdout and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # stopped before the store was even opened


def test_cells_that_would_share_a_run_name_stop_the_sweep_before_any_training(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for axis, said in (
        ("train.batch_size=32,64", "(train.batch_size: 32 and 64)"),
        ("schedule=constant,cosine", "(schedule: constant and cosine)"),
        ("optimizer.lr_scale=1,3", "(optimizer.lr_scale: 1 and 3)"),
    ):
        proc = run_main(["-m", "experiment=smoke", "model.depth=2", axis, f"tracking.uri={uri}"], tmp_path)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.count("\n") == 1 and "would both be named" in proc.stderr
        assert "start:" not in proc.stdout and "[sweep" not in proc.stdout
    hint = "e.g. tracking.run_name='${model.activation}-${optimizer.name}-d${model.depth}-s${seed}-lr_scale${optimizer"
    assert hint in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_check_names_passes_distinct_names_and_names_every_differing_key():
    from study.errors import ConfigError
    from study.sweep import check_names

    cells = [["seed=0", "train.batch_size=32"], ["seed=0", "train.batch_size=64"]]
    check_names(cells, ["relu-b32", "relu-b64"], "${model.activation}-b${train.batch_size}")
    with pytest.raises(ConfigError, match=r"both be named 'relu' \(seed, train.batch_size: 0 and 1, 32 and 64\)"):
        check_names([["seed=0", "train.batch_size=32"], ["seed=1", "train.batch_size=64"]], ["relu", "relu"], "x")
