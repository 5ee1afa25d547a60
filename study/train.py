"""Entry point: `python -m study.train` (Hydra) and the task function `train(cfg) -> dict`.

One call of `train` is one grid cell: plan it (`config.plan`: every check, each training value read
once), seed, load data, build model and optimizer, fit with the diagnostic train step, evaluate on the
test set, record everything in one MLflow run. The factories it calls take plain arguments; the
config itself is read by `config.plan`, and for how the process runs (threads, determinism, precision,
verbosity, the user's callbacks) by `runtime` and `callbacks.recorders`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from study import (  # noqa: E402
    callbacks,  # noqa: E402
    contract,
    data,
    losses,
    mlflow_inputs,
    models,
    runtime,
    stops,
    tracking,
    verdicts,
)
from study import diagnostics as diag  # noqa: E402
from study.config import CellPlan, plan  # noqa: E402
from study.errors import ConfigError  # noqa: E402
from study.launch_order import progress  # noqa: E402
from study.sweep import read_sweep_file  # noqa: E402

if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", lambda: str(tracking.REPO_ROOT))


TRAIN_EVAL_EXAMPLES = 10_000  # after training, `eval_train/*` evaluates this many training examples


def cell_context(cfg: DictConfig) -> dict:
    """Sweep id, parent run, cell index and count when running inside a Hydra multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hc = HydraConfig.get()
    info = read_sweep_file(hc.sweep.dir) or {}
    return {**info, "index": int(hc.job.num)}


def train(cfg: DictConfig, context: dict | None = None) -> dict:
    """Train and evaluate one cell, recorded as one MLflow run; returns its final metrics.
    `context`: the sweep this cell belongs to (`cell_context`; None or {} for a single run)."""
    t0 = time.time()
    p = plan(cfg)
    runtime.setup_keras(cfg)
    splits = p.data.load(p.seed)
    assert len(splits.x_train) == p.n_train, (len(splits.x_train), p.n_train)  # data.train_size's promise

    ctx = context or {}
    t = p.tracking
    c, exp_id = _store(t, ctx)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    flat = tracking.flatten(resolved)
    tags = {
        contract.ROLE: contract.CELL if ctx else contract.SINGLE,
        contract.FINGERPRINT: tracking.fingerprint(flat),
        **tracking.environment_tags(),
        contract.OUTCOME: contract.RUNNING,
        **tracking.source_tags(),
    }
    where = progress(ctx["index"], ctx.get("n_cells"), ctx.get("started"), ctx.get("costs"), time.time()) if ctx else ""
    if ctx:  # a sweep's cell waits out a lost tracking server instead of failing at once
        tracking.wait_for_store(t.uri, t.wait_s, where)
        if ctx["index"] % tracking.PROGRESS_EVERY == 0:  # the UI shows how far the sweep is
            _show_progress(c, ctx["parent_run_id"], where)
        tags |= {
            "mlflow.parentRunId": ctx["parent_run_id"],
            contract.SWEEP_ID: ctx[contract.SWEEP_ID],
            contract.CELL_INDEX: ctx["index"],
        }
        done = None if t.rerun else tracking.resume(c, exp_id, tags[contract.FINGERPRINT], ctx[contract.SWEEP_ID])
        if done is not None:
            print(
                f"{where}{t.run_name} skipped: already FINISHED as run {done.info.run_id} "
                "(tracking.rerun=true to train it again)",
                flush=True,
            )
            return {**done.data.metrics, contract.OUTCOME: "skipped", "run_id": done.info.run_id}
    run_info = c.create_run(exp_id, run_name=t.run_name, tags={k: str(v) for k, v in tags.items()}).info
    run = tracking.RunLogger(c, run_info.run_id, background=True)
    print(
        f"{where}{t.run_name} start: activation={cfg.model.activation} optimizer={cfg.optimizer.name} "
        f"depth={cfg.model.depth} seed={cfg.seed} ({len(splits.x_train)} train examples, batch {p.batch_size})",
        flush=True,
    )
    try:
        _record_setup(run, c, p, splits, flat, resolved, f"{where}{t.run_name}")
        with runtime.release_traced_gradients():
            result = _fit_and_evaluate(cfg, p, splits, run)
        result["time/wall_s"] = time.time() - t0
        run.metrics({k: v for k, v in result.items() if "/" in k}, step=result.pop("epochs_done"))
        run.tags(
            {
                contract.OUTCOME: result[contract.OUTCOME],
                contract.VERDICT: result[contract.VERDICT],
                contract.VERDICT_REASON: result[contract.VERDICT_REASON],
                contract.INIT_FINDING: result[contract.INIT_FINDING],
                tracking.NOTE: tracking.cell_note(cfg, result, p.optimizer.learning_rate),
            }
        )
        run.end("FINISHED")
    except BaseException as err:
        _end_unfinished(run, err, f"{where}{t.run_name}", run_info.run_id)
        raise
    result["run_id"] = run_info.run_id
    print(
        f"{where}{t.run_name} {result[contract.OUTCOME]}: test/accuracy={result['test/accuracy']:.4f} "
        f"in {result['time/wall_s']:.1f} s; verdict {result[contract.VERDICT]}: {result[contract.VERDICT_REASON]}",
        flush=True,
    )
    return result


def _record_setup(run, c, p: CellPlan, splits, flat: dict, resolved: dict, who: str) -> None:
    """What a cell records before it trains: params (the flattened config and the values derived from
    it), the resolved config (credentials hidden), its datasets (a convenience, never its failure)."""
    run.params(
        flat
        | {
            contract.BATCH_SIZE_RESOLVED: p.batch_size,
            contract.STEPS_PER_EPOCH: p.steps_per_epoch,
            contract.LEARNING_RATE_EFFECTIVE: p.optimizer.learning_rate,
            contract.NUM_CLASSES: splits.num_classes,
        }
    )
    run.text(tracking.redact(OmegaConf.to_yaml(resolved)), contract.CONFIG_ARTIFACT)
    try:  # the UI's Dataset column and the run's Datasets
        mlflow_inputs.log_datasets(c, run.run_id, splits)
    except Exception as err:
        said = " ".join(tracking.redact(f"{type(err).__name__}: {err}").split())[:300]
        print(f"{who}: datasets not logged ({said}); training goes on", flush=True)


def _show_progress(c, parent_run_id: str, where: str) -> None:
    """The sweep's description (its parent run's) with this cell's `[cell i/N] (elapsed, ETA)`; a
    convenience: a store that refuses it costs the cell nothing."""
    with contextlib.suppress(Exception):
        note = c.get_run(parent_run_id).data.tags.get(tracking.NOTE, "")
        c.set_tag(parent_run_id, tracking.NOTE, tracking.sweep_progress(note, where))


def _store(t, ctx: dict):
    """The store's client and the experiment's id: a sweep's cell gets them from the sweep (its
    callback checked the store once, before any job); a single run checks the store and its artifact
    folder, creates the experiment if needed and ends the runs of processes that no longer exist."""
    exp_id = ctx.get("experiment_id")
    if not exp_id:
        tracking.check_store(t.uri, None)
    c = tracking.client(t.uri)
    if not exp_id:
        exp_id = tracking.ensure_experiment(c, t.experiment, tracking.artifact_location(t.uri, t.artifact_location))
        tracking.check_store(t.uri, c.get_experiment(exp_id).artifact_location)
        tracking.close_stale(c, exp_id)
    return c, exp_id


def _end_unfinished(run, err: BaseException, who: str, run_id: str) -> None:
    """A cell that did not finish: KILLED when stopped (Ctrl-C, SIGTERM or SIGHUP, as KeyboardInterrupt
    or whatever TensorFlow's C++ turned it into, or SystemExit: not the cell's fault), else FAILED with
    its traceback; each record tried on its own (the store may be what failed), one line said."""
    trace, error = tracking.redact(traceback.format_exc()), tracking.redact(f"{type(err).__name__}: {err}")
    killed = not isinstance(err, Exception) or stops.received() is not None
    records = (
        [run.flush, lambda: run.tags({contract.OUTCOME: contract.KILLED}), lambda: run.end("KILLED")]
        if killed
        else [
            run.flush,
            lambda: run.text(trace, contract.TRACEBACK_ARTIFACT),
            lambda: run.tags({contract.OUTCOME: contract.FAILED, contract.ERROR: error[:5000]}),
            lambda: run.end("FAILED"),
        ]
    )
    for record in records:
        with contextlib.suppress(Exception):  # the store may be what failed; report the first error
            record()
    if killed:
        print(f"{who} interrupted: run {run_id} ended KILLED", flush=True)
    else:
        print(f"{who} FAILED: {error}", flush=True)


def _compiled_model(p: CellPlan, splits) -> diag.DiagnosticModel:
    """The cell's model with its optimizer, loss and diagnostic train step, its state built."""
    base = models.build(p.model, splits.input_shape, splits.num_classes)
    model = diag.DiagnosticModel(base.inputs, base.outputs, name=base.name)
    opt = p.optimizer.build(p.schedule.build(p.optimizer.learning_rate, p.steps_per_epoch, p.epochs))
    if hasattr(opt, "check_size"):  # newton: a clear error for a model too large for it
        opt.check_size(model)
    model.compile(
        optimizer=opt,
        loss=losses.build(p.loss, splits.num_classes),
        metrics=["accuracy"],
        jit_compile=False,
        steps_per_execution=p.steps_per_execution,
    )
    dc = p.diagnostics
    total = p.steps_per_epoch * p.epochs
    model.enable_diagnostics(
        dc.level,
        p.model.activation,
        dc.small_grad_threshold,
        p.model.activation_params,
        activation_every=dc.activation_every(total),
        last_step=total - 1,
    )
    runtime.build_state(model, splits.x_train[: p.batch_size], splits.y_train[: p.batch_size])
    return model


def _fit_and_evaluate(cfg, p: CellPlan, splits, run) -> dict:
    model = _compiled_model(p, splits)
    rec = callbacks.recorders(cfg, p, run, splits)
    verbose = cfg.train.verbose
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 0
    t_fit = time.time()
    model.fit(
        data.pipeline(splits.x_train, splits.y_train, p.batch_size, shuffle_seed=p.seed),
        epochs=p.epochs,
        validation_data=data.pipeline(splits.x_val, splits.y_val, 1024) if len(splits.x_val) else None,
        callbacks=rec.all,
        verbose=verbose,
        shuffle=False,
    )  # tf.data shuffles, seeded
    fit_s = time.time() - t_fit
    t_eval = time.time()
    test = model.evaluate(data.pipeline(splits.x_test, splits.y_test, 1024), verbose=0, return_dict=True)
    n_eval = min(len(splits.x_train), TRAIN_EVAL_EXAMPLES)  # the fit itself, without dropout
    fitted = model.evaluate(
        data.pipeline(splits.x_train[:n_eval], splits.y_train[:n_eval], 1024), verbose=0, return_dict=True
    )
    result = {
        "test/loss": float(test["loss"]),
        "test/accuracy": float(test["accuracy"]),
        "eval_train/loss": float(fitted["loss"]),
        "eval_train/accuracy": float(fitted["accuracy"]),
        "time/fit_s": fit_s,
        "time/evaluate_s": time.time() - t_eval,  # test set and training-set evaluation after fit
        "time/epoch_s": fit_s / max(1, rec.epochs.epochs_done),
        "epochs_done": rec.epochs.epochs_done,
    }
    result |= _judged(p, rec, splits)
    tables = rec.tables()
    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
            table.to_parquet(Path(tmp) / contract.parquet(name), index=False)
            run.artifact(Path(tmp) / contract.parquet(name))
        if p.tracking.cell_figures:
            t_fig = time.time()
            log_cell_figures(cfg, tables, p.steps_per_epoch, result, run, Path(tmp))
            result["time/figures_s"] = time.time() - t_fig
    return result


def _judged(p: CellPlan, rec: callbacks.Recorders, splits) -> dict:
    """Outcome, the verdict's evidence, final curvature and the verdict of a trained cell."""
    result = {}
    diverged_at = rec.diverged_at()
    result[contract.OUTCOME] = contract.DIVERGED if diverged_at is not None else contract.FINISHED
    if diverged_at is not None:
        result["train/diverged_at_step"] = diverged_at
    if rec.diagnostics is not None:
        result |= rec.diagnostics.summary
    if rec.curvature is not None:
        for stat in ("lambda_max", "two_over_lr"):
            values = [r["value"] for r in rec.curvature.rows if r["stat"] == stat]
            if values:
                result[f"curv/{stat}_final"] = values[-1]
    final = rec.epochs.final()
    loss = final.get("val/loss", final.get("train/loss", float("nan")))
    result[verdicts.PROGRESS] = verdicts.progress(loss, splits.num_classes, p.loss)
    y_eval = splits.y_val if len(splits.y_val) else splits.y_train  # the labels of the accuracy judged
    result[verdicts.CHANCE_ACCURACY] = float(np.bincount(y_eval).max() / len(y_eval))
    epochs = rec.epochs.table()
    by_epoch = epochs.pivot_table(index="epoch", columns="metric", values="value") if len(epochs) else epochs
    result[verdicts.PROGRESS_PEAK] = verdicts.peak_progress(
        by_epoch.to_dict("records"), splits.num_classes, p.loss, result[verdicts.CHANCE_ACCURACY]
    )
    return result | _verdict(p, rec, final, result, splits)


def _verdict(p: CellPlan, rec: callbacks.Recorders, final: dict, result: dict, splits) -> dict:
    if rec.diagnostics is None:
        return {
            contract.VERDICT: "unknown",
            contract.VERDICT_REASON: "diagnostics off",
            contract.INIT_FINDING: "unknown",
        }
    evidence = {**final, **result, "num_classes": splits.num_classes, "loss_fn": p.loss}
    label, reason = verdicts.decide(evidence, p.diagnostics.thresholds)
    init = verdicts.init_finding(evidence, p.diagnostics.thresholds)
    return {contract.VERDICT: label, contract.VERDICT_REASON: reason, contract.INIT_FINDING: init}


def log_cell_figures(cfg, tables: dict, steps_per_epoch: int, result: dict, run, tmp: Path) -> None:
    """The cell's own PNG figures (`figures/` of its run). A figure that cannot be drawn is reported
    and skipped: the cell's result is recorded either way."""
    from study import cell_figures

    title = f"{cfg.tracking.run_name}: test accuracy {result['test/accuracy']:.3f}, verdict {result[contract.VERDICT]}"
    try:
        pngs = cell_figures.draw(tables, steps_per_epoch, title, result)
    except Exception as err:  # a plotting bug must not lose a recorded result
        print(f"{cfg.tracking.run_name}: cell figures not drawn: {type(err).__name__}: {err}", flush=True)
        return
    folder = tmp / "figures"
    folder.mkdir()
    for name, png in pngs.items():
        (folder / name).write_bytes(png)
    run.artifacts(folder, "figures")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    """Single run: errors exit non-zero. Multirun: a failing cell is recorded (run FAILED with its
    traceback) and the sweep goes on; the sweep callback reports failures at the end."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    ctx = cell_context(cfg)
    try:
        with stops.watching():
            return train(cfg, ctx)
    except Exception as err:
        if stops.received() is None:
            return _failed(err, cfg, multirun)
        interrupted(cfg, ctx, multirun)
    except KeyboardInterrupt:
        interrupted(cfg, ctx, multirun)


def interrupted(cfg: DictConfig, ctx: dict, multirun: bool):
    """Ctrl-C, SIGTERM or SIGHUP: one line, exit 130, 143 or 129; in a sweep the parent run ends
    KILLED too."""
    if multirun:  # the sweep stops here: its parent run must not stay RUNNING
        if ctx.get("parent_run_id"):
            with contextlib.suppress(Exception):
                parent = tracking.RunLogger(tracking.client(cfg.tracking.uri), ctx["parent_run_id"])
                parent.tags({contract.OUTCOME: contract.KILLED})
                parent.end("KILLED")
    print(f"interrupted ({stops.name()}): stopped", file=sys.stderr, flush=True)
    raise SystemExit(stops.exit_code()) from None


def _failed(err: Exception, cfg: DictConfig, multirun: bool) -> dict:
    """A cell's error: in a sweep recorded and the sweep goes on; a single run exits non-zero."""
    clear = isinstance(err, (ConfigError, tracking.TrackingError))  # say it plainly, no traceback
    if clear:
        print(f"error: {tracking.redact(str(err))}", file=sys.stderr, flush=True)
    elif multirun:  # the sweep goes on: show what went wrong in this cell
        print(tracking.redact(traceback.format_exc()), file=sys.stderr, flush=True)
    if multirun:
        return {
            contract.OUTCOME: "invalid" if isinstance(err, ConfigError) else contract.FAILED,
            contract.ERROR: tracking.redact(str(err)),
        }
    if clear:
        raise SystemExit(2) from None
    # not re-raised: Hydra would print "Error executing job with overrides: [...]", the overrides as
    # typed, a tracking URI's password included
    print(tracking.redact(traceback.format_exc()), file=sys.stderr, flush=True)
    raise SystemExit(1) from None


if __name__ == "__main__":
    main()
