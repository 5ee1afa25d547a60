"""train(cfg): what one cell records; invalid values; determinism; divergence."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from helpers.commands import run_main
from helpers.mlflow_queries import runs

import study.runtime
from study import verdicts
from study.errors import ConfigError
from study.train import train


def test_single_run_records_params_tags_metrics_and_artifacts(make_cfg, store):
    result = train(make_cfg("model.activation=tanh", "optimizer=momentum", "train.epochs=2"))
    _, client = store
    (run,) = runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "tanh-momentum-d2-s0"
    p, t, m = run.data.params, run.data.tags, run.data.metrics
    assert p["model.activation"] == "tanh" and p["model.depth"] == "2" and p["optimizer.name"] == "momentum"
    assert p["optimizer.learning_rate"] == "0.01" and p["train.batch_size"] == "32" and p["seed"] == "0"
    assert t["outcome"] == "finished" and t["gradient_verdict"] in verdicts.LABELS and t["verdict_reason"]
    assert p["data.num_classes"] == "4"
    assert {"git_commit", "tensorflow_version", "keras_version", "device", "fingerprint"} <= set(t)
    assert "mlflow.parentRunId" not in t
    contexts = {i.tags[0].value: i.dataset for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert set(contexts) == {"train", "validation", "test"} and contexts["train"].name == "synthetic"
    examples = {k: json.loads(d.profile)["examples"] for k, d in contexts.items()}
    assert examples["train"] > examples["validation"] > 0 and examples["test"] > 0
    for key in ("test/loss", "test/accuracy", "time/wall_s", "grad/conv_01/l2", "grad/global_norm"):
        assert key in m
    assert m["test/accuracy"] == pytest.approx(result["test/accuracy"])
    steps = int(p["train.steps_per_epoch"]) * 2
    every = max(1, steps // 50)  # log_every_n_steps=auto: about 50 points a run
    assert len(client.get_metric_history(run.info.run_id, "grad/conv_02/rms")) == -(-steps // every)
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert [h.step for h in history] == [0, 1]
    for key in ("train/loss", "train/accuracy", "val/loss"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "diagnostics.parquet", "epochs.parquet"} <= artifacts
    table = pd.read_parquet(client.download_artifacts(run.info.run_id, "diagnostics.parquet"))
    assert list(table.columns) == ["step", "epoch", "group", "layer", "layer_index", "stat", "value"]
    assert table["step"].max() + 1 == int(p["train.steps_per_epoch"]) * 2


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.activation=reluu", ["reluu", "sigmoid", "leaky_relu", "softsign"]),
        ("optimizer.name=adamax", ["adamax", "sgd", "nadam"]),
        ("model.depth=0", ["model.depth=0", ">= 1"]),
        ("optimizer.learning_rate=0", ["learning_rate=0", "> 0"]),
        ("optimizer.learning_rate=-0.1", ["learning_rate=-0.1"]),
        ("optimizer.learning_rate=inf", ["learning_rate=inf", "finite number > 0"]),
        ("train.batch_size=100000", ["batch_size=100000", "230"]),
        ("train.batch_size=big", ["batch_size='big'", "full"]),
        ("train.steps_per_execution=0", ["steps_per_execution=0", ">= 1"]),
        ("data.name=cifar10", ["cifar10", "fashion_mnist", "synthetic"]),
        ("schedule.name=linear", ["linear", "cosine"]),
        ("model.bn_momentum=1.0", ["bn_momentum=1.0", "[0, 1)"]),
        ("diagnostics.verdict.dead_above=lots", ["diagnostics.verdict.dead_above='lots'", "number"]),
        ("+diagnostics.verdict.deadd=1", ["deadd", "dead_above"]),
        ("tracking.wait_s=-1", ["tracking.wait_s=-1", ">= 0"]),
    ],
)
def test_invalid_values_fail_before_training_naming_value_and_choices(make_cfg, store, override, words):
    with pytest.raises(ConfigError) as err:
        train(make_cfg(override))
    assert all(w in str(err.value) for w in words), str(err.value)
    assert runs(store[1]) == []  # nothing started


def test_invalid_value_on_the_command_line_exits_non_zero(tmp_path):
    proc = run_main(["model.activation=reluu", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], tmp_path)
    assert proc.returncode != 0
    assert "unknown activation 'reluu'" in proc.stderr and "valid choices" in proc.stderr


def test_same_config_twice_gives_identical_metrics_and_steps_per_execution_changes_none(make_cfg, store):
    same = ("train.deterministic=true", "train.epochs=2", "model.activation=elu")
    cfg = make_cfg(*same)
    a, b = train(cfg), train(cfg)
    for key in ("test/loss", "test/accuracy", "diag/ratio_first_last_init", "diag/ratio_first_last_final"):
        assert a[key] == b[key], key
    many = train(make_cfg(*same, "train.steps_per_execution=5"))
    for key in ("test/loss", "test/accuracy", "diag/ratio_first_last_final", "diag/grad_norm_noise"):
        assert a[key] == many[key], f"steps_per_execution=5 changed {key}"
    one, five = (store[1].download_artifacts(r["run_id"], "diagnostics.parquet") for r in (a, many))
    pd.testing.assert_frame_equal(pd.read_parquet(one), pd.read_parquet(five))


def test_diverging_run_is_recorded_as_a_result(make_cfg, store):
    result = train(
        make_cfg("optimizer=sgd", "optimizer.learning_rate=1e4", "model.activation=leaky_relu", "train.epochs=3")
    )
    _, client = store
    (run,) = runs(client)
    assert result["outcome"] == "diverged" and run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "diverged" and run.data.tags["gradient_verdict"] == "diverged"
    assert "loss non-finite at step" in run.data.tags["verdict_reason"]
    assert run.data.metrics["diag/first_nonfinite_step"] >= 0
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(loss) == 1 and not math.isfinite(loss[0].value)  # stopped in the first epoch, metrics kept
    assert "test/accuracy" in run.data.metrics


def test_lr_scale_schedule_and_train_set_evaluation_are_recorded(make_cfg, store):
    train(
        make_cfg(
            "optimizer=sgd",
            "optimizer.lr_scale=0.3",
            "schedule=step",
            "schedule.decay_epochs=1",
            "schedule.decay_rate=0.5",
            "train.epochs=3",
            "regularization=l2",
            "mitigation=clipping",
        )
    )
    _, client = store
    (run,) = runs(client)
    p, m = run.data.params, run.data.metrics
    assert float(p["optimizer.learning_rate_effective"]) == pytest.approx(0.05 * 0.3)
    assert p["regularization"] == "l2" and p["model.l2"] == "0.001"
    assert p["mitigation"] == "clipping" and p["optimizer.clipnorm"] == "1.0"
    lrs = [h.value for h in client.get_metric_history(run.info.run_id, "train/learning_rate")]
    assert lrs == pytest.approx([0.015, 0.015 * 0.5, 0.015 * 0.25])  # at each epoch's first step: halved per epoch
    elapsed = [h.value for h in client.get_metric_history(run.info.run_id, "time/elapsed_s")]
    assert len(elapsed) == 3 and 0 < elapsed[0] < elapsed[1] < elapsed[2] <= m["time/fit_s"]
    assert 0 <= m["eval_train/accuracy"] <= 1 and m["eval_train/loss"] > 0
    table = pd.read_parquet(client.download_artifacts(run.info.run_id, "diagnostics.parquet"))
    g = table[table["stat"] == "global_norm"].sort_values("step")["value"].to_numpy()
    g = g[-max(int(p["train.steps_per_epoch"]), 10) :]  # the last epoch, or the last 10 steps if an epoch has fewer
    jumps = [math.log(b / a) for a, b in zip(g, g[1:])]  # recomputed from the step table
    assert m["diag/grad_norm_noise"] == pytest.approx(math.sqrt(sum(j * j for j in jumps) / len(jumps) / 2), rel=1e-5)


def test_gradient_noise_is_zero_for_full_batch_with_no_update(make_cfg, store):
    """Full batch and a learning rate too small to move the weights: the same gradient at every step."""
    train(make_cfg("optimizer=sgd", "optimizer.learning_rate=1e-30", "train.batch_size=full", "train.epochs=4"))
    (run,) = runs(store[1])
    assert run.data.metrics["diag/grad_norm_noise"] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("scale", ["0", "-1", "fast", "inf"])
def test_invalid_lr_scale_fails_naming_the_value(make_cfg, store, scale):
    with pytest.raises(ConfigError) as err:
        train(make_cfg(f"optimizer.lr_scale={scale}"))
    assert "optimizer.lr_scale=" in str(err.value) and scale in str(err.value) and "> 0" in str(err.value)
    assert runs(store[1]) == []


def test_cells_trained_one_after_another_leave_no_traced_graph_behind(make_cfg, monkeypatch):
    """TensorFlow's gradient registry kept every cell's graphs alive (tf.distribute's all_reduce
    registers a gradient function per trace): a sweep's memory grew 16-18 MiB a cell."""
    import gc

    import keras
    from tensorflow.python.framework import func_graph, ops

    def graphs() -> int:
        keras.backend.clear_session()
        gc.collect()
        return sum(isinstance(o, func_graph.FuncGraph) for o in gc.get_objects())

    gc.unfreeze()  # as in a new process (conftest froze the imports): the first cell freezes them
    monkeypatch.setattr(study.runtime, "_frozen", False)
    train(make_cfg("model.activation=tanh"))
    registry, alive = len(ops._gradient_registry._registry), graphs()
    assert gc.get_freeze_count() > 100_000  # what was alive before the first cell: out of the collector's reach
    train(make_cfg("model.activation=tanh", "seed=1"))
    assert len(ops._gradient_registry._registry) == registry
    assert graphs() <= alive  # what a cell creates is still collected


def test_a_sweep_cell_shows_the_sweeps_progress_in_its_parent_runs_description(make_cfg, store):
    """Every PROGRESS_EVERY-th cell writes `[cell i/N] (elapsed, ETA)` into the running sweep's
    description (the MLflow UI's), in place of its state line; the others leave it as it is."""
    import re
    import time

    from omegaconf import OmegaConf

    from study import contract, tracking

    uri, client = store
    artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"  # not ./mlruns of the checkout
    exp_id = tracking.ensure_experiment(client, "activation-study", artifacts.as_uri())
    config = OmegaConf.create({"hydra": {"sweeper": {"params": {"seed": "0,1"}}}, "question": "Why?"})
    parent = client.create_run(exp_id, run_name="smoke-x", tags={contract.ROLE: contract.SWEEP}).info.run_id
    client.set_tag(parent, tracking.NOTE, tracking.sweep_note(config, "smoke", [[]] * 8, "running"))
    ctx = {"experiment_id": exp_id, "parent_run_id": parent, contract.SWEEP_ID: "x", "n_cells": 8}
    ctx |= {"started": time.time() - 10, "costs": [1.0] * 8}
    for index in (4, 5):  # the 5th cell (index 4) leaves it; the 6th (index 5, a multiple of 5) updates it
        train(make_cfg(f"seed={index}"), context=ctx | {"index": index})
        note = client.get_run(parent).data.tags[tracking.NOTE]
        assert ("Sweep running\n" in note) == (index % tracking.PROGRESS_EVERY != 0), note
    line = re.search(r"^Sweep running: .*$", note, re.M).group(0)
    m = re.fullmatch(r"Sweep running: \[cell 6/8\] \((\d+):(\d\d) elapsed, ETA (\d+):(\d\d)\)", line)
    assert m, line
    elapsed, left = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    assert elapsed >= 10 and abs(left - elapsed * 3 / 5) <= 1, line  # 5 cells of cost 1 begun, 3 to go
    assert note.startswith("**Sweep of preset `smoke`**: 8 cells") and "**Question.** Why?" in note


def test_timed_steps_leave_out_curvature_measurements_validation_and_logging(make_cfg, store):
    """train.time_steps: time/steps_s grows each epoch and, with λ_max measured before every step
    (a batch-start hook that runs before the timer's), stays below the training time minus those
    measurements (a timer that started before them would not)."""
    train(make_cfg("train.epochs=2", "train.time_steps=true", "diagnostics.curvature.every_n_steps=1"))
    _, client = store
    (run,) = runs(client)
    rid = run.info.run_id
    steps_s = [h.value for h in client.get_metric_history(rid, "time/steps_s")]
    elapsed = [h.value for h in client.get_metric_history(rid, "time/elapsed_s")]
    assert len(steps_s) == 2 and 0 < steps_s[0] < steps_s[1]
    curv = client.get_metric_history(rid, "curv/seconds")
    spent = sum(h.value for h in curv if h.step < int(run.data.params["train.steps_per_epoch"]) * 2)
    assert len(curv) > 2 and spent > 0
    assert steps_s[1] + spent <= elapsed[1]
