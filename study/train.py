"""Entry point: `python -m study.train` (Hydra) and the task function `train(cfg) -> dict`.

One call of `train` is one grid cell: check the config, seed, load data, build model and optimizer,
fit with the diagnostic train step, evaluate on the test set, record everything in one MLflow run.
Only this module (and the factories it calls with plain arguments) reads the Hydra config.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from study import contract, data, losses, mlflow_inputs, models, optimizers, stops, tracking, verdicts  # noqa: E402
from study import diagnostics as diag  # noqa: E402
from study.callbacks import (  # noqa: E402
    CurvatureLogger,
    DiagnosticsLogger,
    DivergenceGuard,
    EpochLogger,
    HistogramLogger,
)
from study.config import batch_size, check, learning_rate, model_spec, thresholds  # noqa: E402,F401
from study.errors import ConfigError  # noqa: E402
from study.launch_order import progress  # noqa: E402
from study.sweep import read_sweep_file  # noqa: E402


class _RetracingNoise(logging.Filter):
    """Every cell builds a new model, so Keras traces new functions and TensorFlow warns that they
    'triggered tf.function retracing': expected here, and it drowned the cells' own lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_RetracingNoise())

if not OmegaConf.has_resolver("repo_root"):
    OmegaConf.register_new_resolver("repo_root", lambda: str(tracking.REPO_ROOT))


TRAIN_EVAL_EXAMPLES = 10_000  # after training, `eval_train/*` evaluates this many training examples


def threads(cfg: DictConfig) -> int | None:
    """TensorFlow threads per job: `train.threads`, or with `auto` the cores divided among the
    joblib launcher's parallel jobs, or the CPUs Ray reserves per task (`ray.remote.num_cpus`,
    Ray's default 1) under the Ray launcher (None: TensorFlow's default, for one job at a time)."""
    t = cfg.train.get("threads", "auto")
    if t != "auto":
        return int(t) if t else None
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    target = str(launcher.get("_target_", ""))
    if "ray" in target:
        return int(OmegaConf.select(launcher, "ray.remote.num_cpus", default=None) or 1)
    if "joblib" not in target:
        return None
    n_jobs = int(launcher.get("n_jobs", -1))
    cores = os.cpu_count() or 1
    return max(1, cores // (cores if n_jobs < 1 else n_jobs))


_frozen = False  # freeze_once has frozen this process's objects (a forked child inherits both)


def freeze_once() -> None:
    """Move what is alive before the first cell (TensorFlow, Keras, MLflow, Hydra, pandas: about
    700,000 objects) out of the garbage collector's reach, once per process, right after a
    collection. Every later collection, clear_session's and Python's automatic ones, then scans only
    what cells created: 0.09-0.17 s of collection a cell instead of 0.41-0.53 s (depth-8 grid cell,
    measured with gc.callbacks). What cells create is collected as before. Whether it is done is
    kept here: `gc.get_freeze_count()` walks the ~700,000 frozen objects, 50 ms a call."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def setup_keras(cfg: DictConfig) -> None:
    """Fresh Keras state and seeds for every cell (launchers may reuse worker processes); thread
    settings are fixed before TensorFlow starts and identical in every job of a sweep."""
    n = threads(cfg)
    if n and tf.config.threading.get_intra_op_parallelism_threads() != n:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)  # a CNN's ops run one after another
    freeze_once()
    keras.backend.clear_session()
    keras.utils.set_random_seed(int(cfg.seed))
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if cfg.train.get("mixed_precision") else "float32")


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
    check(cfg)
    setup_keras(cfg)
    d = cfg.data
    splits = data.load(
        d.name,
        seed=int(cfg.seed),
        val_fraction=d.val_fraction,
        train_subset=d.get("train_subset"),
        test_subset=d.get("test_subset"),
        options=OmegaConf.to_container(d.options) if "options" in d else {},
        probe_size=int(cfg.diagnostics.get("probe_size", 256)),
        standardize=bool(d.get("standardize", False)),
    )
    bs = batch_size(cfg, len(splits.x_train))
    steps_per_epoch = math.ceil(len(splits.x_train) / bs)

    ctx = context or {}
    t = cfg.tracking
    exp_id = ctx.get("experiment_id")
    if not exp_id:  # a single run; a sweep's callback made these checks once, before any job
        tracking.check_store(t.uri, None)
    c = tracking.client(t.uri)
    if not exp_id:
        exp_id = tracking.ensure_experiment(
            c, t.experiment, tracking.artifact_location(t.uri, t.get("artifact_location"))
        )
        tracking.check_store(t.uri, c.get_experiment(exp_id).artifact_location)
        tracking.close_stale(c, exp_id)
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
        tracking.wait_for_store(t.uri, float(t.get("wait_s", 300)), where)
        tags |= {
            "mlflow.parentRunId": ctx["parent_run_id"],
            contract.SWEEP_ID: ctx[contract.SWEEP_ID],
            contract.CELL_INDEX: ctx["index"],
        }
        done = (
            None if t.get("rerun") else tracking.resume(c, exp_id, tags[contract.FINGERPRINT], ctx[contract.SWEEP_ID])
        )
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
        f"depth={cfg.model.depth} seed={cfg.seed} ({len(splits.x_train)} train examples, batch {bs})",
        flush=True,
    )
    try:
        run.params(
            flat
            | {
                contract.BATCH_SIZE_RESOLVED: bs,
                contract.STEPS_PER_EPOCH: steps_per_epoch,
                contract.LEARNING_RATE_EFFECTIVE: learning_rate(cfg),
                contract.NUM_CLASSES: splits.num_classes,
            }
        )
        run.text(tracking.redact(OmegaConf.to_yaml(resolved)), contract.CONFIG_ARTIFACT)  # no credentials
        try:  # the UI's Dataset column and the run's Datasets: a convenience, never the cell's failure
            mlflow_inputs.log_datasets(c, run_info.run_id, splits)
        except Exception as err:
            said = " ".join(tracking.redact(f"{type(err).__name__}: {err}").split())[:300]
            print(f"{where}{t.run_name}: datasets not logged ({said}); training goes on", flush=True)
        with _release_traced_gradients():
            result = _fit_and_evaluate(cfg, splits, bs, steps_per_epoch, run)
        result["time/wall_s"] = time.time() - t0
        run.metrics({k: v for k, v in result.items() if "/" in k}, step=result.pop("epochs_done"))
        run.tags(
            {
                contract.OUTCOME: result[contract.OUTCOME],
                contract.VERDICT: result[contract.VERDICT],
                contract.VERDICT_REASON: result[contract.VERDICT_REASON],
                tracking.NOTE: cell_note(cfg, result),
            }
        )
        run.end("FINISHED")
    except BaseException as err:
        trace, error = tracking.redact(traceback.format_exc()), tracking.redact(f"{type(err).__name__}: {err}")
        # Ctrl-C, SIGTERM or SIGHUP (KeyboardInterrupt, or whatever TensorFlow's C++ turned it into)
        # or SystemExit: not the cell's fault
        killed = not isinstance(err, Exception) or stops.received() is not None
        records = (
            [run.flush, lambda: run.end("KILLED")]
            if killed
            else [
                run.flush,
                lambda: run.text(trace, contract.TRACEBACK_ARTIFACT),
                lambda: run.tags({contract.OUTCOME: contract.FAILED, contract.ERROR: error[:5000]}),
                lambda: run.end("FAILED"),
            ]
        )
        if killed:
            records.insert(1, lambda: run.tags({contract.OUTCOME: contract.KILLED}))
        for record in records:
            with contextlib.suppress(Exception):  # the store may be what failed; report the first error
                record()
        if killed:
            print(f"{where}{t.run_name} interrupted: run {run_info.run_id} ended KILLED", flush=True)
        else:
            print(f"{where}{t.run_name} FAILED: {error}", flush=True)
        raise
    result["run_id"] = run_info.run_id
    print(
        f"{where}{t.run_name} {result[contract.OUTCOME]}: test/accuracy={result['test/accuracy']:.4f} "
        f"in {result['time/wall_s']:.1f} s; verdict {result[contract.VERDICT]}: {result[contract.VERDICT_REASON]}",
        flush=True,
    )
    return result


@contextlib.contextmanager
def _release_traced_gradients():
    """Drop the gradient functions TensorFlow registered while the cell traced its functions.

    Every trace of a function that uses tf.custom_gradient registers a gradient function in
    TensorFlow's process-wide gradient registry, and its closure holds the traced graph: tf.distribute's
    all_reduce, which Keras's optimizer calls in every train function, does so twice a cell, which kept
    every cell's graphs alive (the resident memory of a sweep grew 16-18 MiB a cell). Nothing
    differentiates through a cell's graphs once it has ended."""
    from tensorflow.python.framework import ops as tf_ops  # the registry is not public API

    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else set()
    try:
        yield
    finally:
        if isinstance(registry, dict):
            for name in [k for k in registry if k not in before and str(k).startswith("CustomGradient-")]:
                registry.pop(name, None)


def cell_note(cfg: DictConfig, result: dict) -> str:
    """The cell's description in the MLflow UI: what it trained and what came out."""
    return (
        f"**{cfg.model.activation} + {cfg.optimizer.name}, depth {cfg.model.depth}, seed {cfg.seed}** "
        f"({cfg.model.init} init, learning rate {learning_rate(cfg):g}, batch {cfg.train.batch_size}, "
        f"{cfg.train.epochs} epochs on {cfg.data.name}).\n\n"
        f"Outcome `{result[contract.OUTCOME]}`: test accuracy {result['test/accuracy']:.4f}, test loss "
        f"{result['test/loss']:.4g}, in {result['time/wall_s']:.1f} s.\n\n"
        f"Gradient verdict **{result[contract.VERDICT]}**: {result[contract.VERDICT_REASON]}."
    )


def build_state(model, x, y) -> None:
    """Create the optimizer's, the loss's and the metrics' variables before `fit`, as Keras does
    itself under a distribution strategy (symbolically: nothing is computed, no random state is
    used). Without it TensorFlow traces the train function twice, because its first trace creates
    variables; with it once, which halves the tracing of the train step, the largest fixed cost of
    a short cell (profiled; effect in scripts/bench_cell.py). Same variables, same values, same
    results."""
    model._symbolic_build(data_batch=(x, y))


def _fit_and_evaluate(cfg, splits, bs, steps_per_epoch, run) -> dict:
    spec = model_spec(cfg)
    base = models.build(spec, splits.input_shape, splits.num_classes)
    model = diag.DiagnosticModel(base.inputs, base.outputs, name=base.name)
    s, o = cfg.schedule, cfg.optimizer
    lr = optimizers.schedule(
        s.name,
        learning_rate(cfg),
        steps_per_epoch,
        int(cfg.train.epochs),
        decay_rate=s.get("decay_rate", 0.5),
        decay_epochs=s.get("decay_epochs", 1.0),
        alpha=s.get("alpha", 0.0),
    )
    opt = optimizers.build(
        o.name, lr, dict(o.get("params") or {}), clipnorm=o.get("clipnorm"), clipvalue=o.get("clipvalue")
    )
    if hasattr(opt, "check_size"):  # newton: a clear error for a model too large for it
        opt.check_size(model)
    loss_fn = cfg.train.get("loss", "cross_entropy")
    model.compile(
        optimizer=opt,
        loss=losses.build(loss_fn, splits.num_classes),
        metrics=["accuracy"],
        jit_compile=False,
        # several steps per call into TensorFlow; Keras's own train step (diagnostics off) takes
        # one, so that its divergence guard stops at the exact step
        steps_per_execution=int(cfg.train.get("steps_per_execution", 1)) if cfg.diagnostics.level != "off" else 1,
    )
    dc = cfg.diagnostics
    model.enable_diagnostics(dc.level, spec.activation, float(dc.small_grad_threshold), spec.activation_params)
    build_state(model, splits.x_train[:bs], splits.y_train[:bs])
    epochs = EpochLogger(run)
    guard = DivergenceGuard() if dc.level == "off" else None  # else the train step stops itself
    callbacks = [epochs] if guard is None else [guard, epochs]
    diag_cb = None
    if dc.level != "off":
        total = steps_per_epoch * int(cfg.train.epochs)
        every = max(1, total // 50) if dc.log_every_n_steps == "auto" else int(dc.log_every_n_steps)
        diag_cb = DiagnosticsLogger(run, every, steps_per_epoch, splits.x_probe, splits.y_probe)
        callbacks.insert(0, diag_cb)
    hist_cb = None
    if dc.level == "full":
        n_epochs = int(cfg.train.epochs)
        at = set(dc.histogram_epochs) if dc.get("histogram_epochs") is not None else {n_epochs}
        hist_cb = HistogramLogger(splits.x_probe, splits.y_probe, at, steps_per_epoch)
        callbacks.append(hist_cb)
    curv_cb = None
    cc = dc.get("curvature") or {}
    if int(cc.get("every_n_steps") or 0) > 0:
        n = cc.get("examples")
        curv_cb = CurvatureLogger(
            run,
            int(cc.every_n_steps),
            splits.x_train[:n],
            splits.y_train[:n],
            iterations=int(cc.get("iterations", 20)),
            top_k=int(cc.get("top_k", 1)),
            trace_samples=int(cc.get("trace_samples", 0)),
            steps_per_epoch=steps_per_epoch,
            seed=int(cfg.seed),
            optimizer_name=o.name,
            momentum=(o.get("params") or {}).get("momentum"),
        )
        callbacks.append(curv_cb)
    callbacks += [hydra.utils.instantiate(cb) for cb in (cfg.train.get("callbacks") or [])]
    verbose = cfg.train.verbose
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 0
    seed = int(cfg.seed)
    t_fit = time.time()
    model.fit(
        data.pipeline(splits.x_train, splits.y_train, bs, shuffle_seed=seed),
        epochs=int(cfg.train.epochs),
        validation_data=data.pipeline(splits.x_val, splits.y_val, 1024) if len(splits.x_val) else None,
        callbacks=callbacks,
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
        "time/epoch_s": fit_s / max(1, epochs.epochs_done),
        "epochs_done": epochs.epochs_done,
    }
    diverged_at = (guard or diag_cb).diverged_at
    result[contract.OUTCOME] = contract.DIVERGED if diverged_at is not None else contract.FINISHED
    if diverged_at is not None:
        result["train/diverged_at_step"] = diverged_at
    tables = {contract.EPOCHS: epochs.table()}
    if diag_cb is not None:
        result |= diag_cb.summary
        tables |= {contract.DIAGNOSTICS: diag_cb.table(), contract.SIGNAL: diag_cb.signal_table()}
    if hist_cb is not None:
        tables[contract.HISTOGRAMS] = hist_cb.table()
    if curv_cb is not None:
        tables[contract.CURVATURE] = curv_cb.table()
        for stat in ("lambda_max", "two_over_lr"):
            values = [r["value"] for r in curv_cb.rows if r["stat"] == stat]
            if values:
                result[f"curv/{stat}_final"] = values[-1]
    final = epochs.final()
    loss = final.get("val/loss", final.get("train/loss", float("nan")))
    result[verdicts.PROGRESS] = verdicts.progress(loss, splits.num_classes, loss_fn)
    y_eval = splits.y_val if len(splits.y_val) else splits.y_train  # the labels of the accuracy judged
    result[verdicts.CHANCE_ACCURACY] = float(np.bincount(y_eval).max() / len(y_eval))
    if diag_cb is not None:
        evidence = {**final, **result, "num_classes": splits.num_classes, "loss_fn": loss_fn}
        result[contract.VERDICT], result[contract.VERDICT_REASON] = verdicts.decide(evidence, thresholds(cfg))
    else:
        result[contract.VERDICT], result[contract.VERDICT_REASON] = "unknown", "diagnostics off"
    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
            table.to_parquet(Path(tmp) / contract.parquet(name), index=False)
            run.artifact(Path(tmp) / contract.parquet(name))
        if cfg.tracking.get("cell_figures", True):
            t_fig = time.time()
            log_cell_figures(cfg, tables, steps_per_epoch, result, run, Path(tmp))
            result["time/figures_s"] = time.time() - t_fig
    return result


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
