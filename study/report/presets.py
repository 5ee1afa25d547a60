"""Each study preset's own report section: the figures that answer its question (the `question` of
conf/experiment/<preset>.yaml) and captions with the measured numbers. A section is registered with
`@register("<preset>")` (study/report/sections.py; the second-order presets' sections are in
study/report/second_order.py); `section(sweep, lo, hi)` returns None for presets without one (grid,
smoke, paper), whose report is the generic activation × optimizer × depth one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study import contract, verdicts
from study.report import collect
from study.report import preset_figures as P
from study.report.sections import SECTIONS, Figure, question, register, section  # noqa: F401  (the registry)


def _f(v, d=3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{d}g}"


def _done(c: pd.DataFrame) -> pd.DataFrame:
    return c[c[contract.OUTCOME].isin(contract.RAN)]


def cells_table(c: pd.DataFrame) -> str:
    """One row per cell: outcome, verdict, test accuracy, ratio at initialisation, wall time."""
    lines = [
        "| cell | outcome | gradient verdict | reason | test accuracy | first/last ratio at init | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in c.sort_values("run_name").iterrows():
        lines.append(
            f"| {r['run_name']} | {r[contract.OUTCOME]} | {r['verdict']} | {r[contract.VERDICT_REASON]} "
            f"| {_f(r['test/accuracy'])} "
            f"| {_f(r[verdicts.RATIO_INIT])} | {_f(r['time/wall_s'], 4)} |"
        )
    return "\n".join(lines)


@register("gd_variants")
def gd_variants(s, lo, hi):
    c, e = _done(s.cells), s.epochs
    order = P.batch_order(c["batch_size"])
    loss = collect.final_epoch(e, "train/loss").groupby("batch_size")["value"].mean()
    t = collect.final_epoch(e, "time/elapsed_s").groupby("batch_size")["value"].mean()
    noise = c.groupby("batch_size")[verdicts.GRAD_NOISE].mean()
    steps = c.groupby("batch_size")["steps_per_epoch"].first()
    parts = [
        f"batch {b} ({int(steps[b]) if b in steps and pd.notna(steps[b]) else '?'} steps/epoch): loss "
        f"{_f(loss.get(b))} after {_f(t.get(b))} s"
        for b in order
    ]
    return [
        Figure(
            "gd_loss",
            "Loss against epochs and wall time",
            lambda: P.loss_vs_epoch_and_time(e, order),
            "Final training loss and training time: " + "; ".join(parts) + ".",
        ),
        Figure(
            "gd_noise",
            "Gradient-norm noise",
            lambda: P.grad_noise(s.steps, c, order),
            "Step-to-step jitter of log ||g|| (sqrt of half the mean squared change between "
            "consecutive steps, over the last epoch, or the last 10 steps when an epoch has fewer; "
            "slow drift barely counts): " + ", ".join(f"batch {b} {_f(noise.get(b))}" for b in order) + ".",
        ),
    ]


@register("lr_schedules")
def lr_schedules(s, lo, hi):
    c = _done(s.cells)
    acc = c.groupby(["optimizer", "schedule"])["test/accuracy"].mean()
    parts = []
    for o, sub in acc.groupby(level=0):
        sub = sub.droplevel(0)
        parts.append(f"{o}: " + ", ".join(f"{k} {v:.3f}" for k, v in sub.items()) + f" (best {sub.idxmax()})")
    metrics = [
        ("train/learning_rate", "learning rate"),
        ("train/loss", "training loss"),
        ("val/accuracy", "validation accuracy"),
    ]
    return [
        Figure(
            "schedule_curves",
            "Learning rate, loss and accuracy per epoch",
            lambda: P.curves_vs(s.epochs, "schedule", "optimizer", metrics),
            "Test accuracy by schedule: " + "; ".join(parts) + ".",
        )
    ]


@register("optimizers_tuned")
def optimizers_tuned(s, lo, hi):
    c = _done(s.cells)
    best = P.best_over(c, "lr", ["optimizer", "activation", "depth"])
    rank = []
    for (a, d), sub in best.groupby(["activation", "depth"]):
        sub = sub.sort_values("test/accuracy", ascending=False)
        rank.append(
            f"{a} depth {d}: "
            + " > ".join(f"{r['optimizer']} ({r['test/accuracy']:.3f} at lr {r['lr']:.2g})" for _, r in sub.iterrows())
        )
    tried = c.dropna(subset=["lr"]).groupby("optimizer")["lr"].agg(["min", "max"])
    edge = sorted(
        {
            f"{r['optimizer']} ({r['activation']}, lr {r['lr']:.2g})"
            for _, r in best.iterrows()
            if r["optimizer"] in tried.index
            and r["lr"] in (tried.loc[r["optimizer"], "min"], tried.loc[r["optimizer"], "max"])
        }
    )
    return [
        Figure(
            "lr_sensitivity",
            "Validation accuracy against learning rate",
            lambda: P.lr_sensitivity(c),
            "Each optimizer's learning rates are its default times `optimizer.lr_scale`; a missing point "
            "diverged. "
            + (
                f"Best at the edge of the tried range, so the range should be extended: {', '.join(edge)}."
                if edge
                else "Every best rate lies inside the tried range."
            ),
        ),
        Figure(
            "isolation",
            "Optimizers at their best learning rate",
            lambda: P.isolation(best),
            "Test accuracy at the learning rate with the best validation accuracy: " + "; ".join(rank) + ".",
        ),
    ]


def _verdicts_by(c: pd.DataFrame, factor: str) -> str:
    parts = []
    for f, sub in c.groupby(factor):
        counts = sub["verdict"].value_counts()
        parts.append(f"{f}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "; ".join(parts)


@register("init")
def init(s, lo, hi):
    c = _done(s.cells)
    deep = c[c["depth"] == c["depth"].max()]
    best = deep.groupby(["activation", "init"])["test/accuracy"].mean()
    parts = [f"{a}: {sub.droplevel(0).idxmax()} ({sub.max():.3f})" for a, sub in best.groupby(level=0)]
    return [
        Figure(
            "init_accuracy",
            "Test accuracy by initialisation",
            lambda: P.axis_heatmap(c, "init"),
            f"Best initialisation per activation at depth {deep['depth'].max()}: " + ", ".join(parts) + ".",
        ),
        Figure(
            "init_ratio",
            "Gradient ratio by initialisation",
            lambda: P.ratio_by(c, "init", lo, hi),
            "Verdicts: " + _verdicts_by(c, "init") + ".",
        ),
    ]


@register("regularization")
def regularization(s, lo, hi):
    c = _done(s.cells)
    norms = P.final_weight_norm(s.steps) if not s.steps.empty else pd.DataFrame(columns=["run_id", "weight_norm"])
    m = c.merge(norms, on="run_id", how="left")
    m["gap"] = m["eval_train/accuracy"] - m["test/accuracy"]
    g = m.groupby("regularization")[["gap", "weight_norm", "test/accuracy"]].mean()
    parts = [
        f"{r}: gap {v['gap']:.3f}, ||W|| {_f(v['weight_norm'])}, test {v['test/accuracy']:.3f}" for r, v in g.iterrows()
    ]
    return [
        Figure(
            "generalization",
            "Train-test gap and weight norm",
            lambda: P.generalization(c, norms),
            "Mean over activations: " + "; ".join(parts) + ".",
        )
    ]


@register("mitigations")
def mitigations(s, lo, hi):
    c = _done(s.cells)
    fixes = []
    for (a, d), sub in c.groupby(["activation", "depth"]):
        plain = sub[sub["mitigation"] == "none"]["verdict"]
        if len(plain) and (plain != "healthy").any():
            healthy = sorted(sub[(sub["mitigation"] != "none") & (sub["verdict"] == "healthy")]["mitigation"].unique())
            fixes.append(
                f"{a} depth {d} ({plain.iloc[0]} without): healthy with {', '.join(healthy) or 'none of them'}"
            )
    key = ["activation", "depth"]
    pair = c[c["mitigation"] == "none"].merge(c[c["mitigation"] == "clipping"], on=key, suffixes=("", "_clip"))
    same = int(
        np.isclose(
            pair[verdicts.RATIO_FINAL], pair["diag/ratio_first_last_final_clip"], rtol=1e-6, equal_nan=True
        ).sum()
    )
    clip = (
        f" Clipping left the final ratio unchanged (its line hides under `none`) in {same} of {len(pair)} "
        "(activation, depth) pairs: training was identical there, so clipping never acted."
        if len(pair)
        else ""
    )
    return [
        Figure(
            "mitigation_ratio",
            "Gradient ratio with each mitigation",
            lambda: P.ratio_by(c, "mitigation", lo, hi),
            ("; ".join(fixes) + "." if fixes else "No plain network had a vanishing or exploding verdict.") + clip,
        ),
        Figure(
            "mitigation_accuracy",
            "Test accuracy with each mitigation",
            lambda: P.axis_heatmap(c, "mitigation"),
            "Clipping rescales the update, not the gradient: the verdict is computed from the raw "
            "gradient, so clipping can only change it through the path training takes.",
        ),
        Figure(
            "mitigation_train_accuracy",
            "Training accuracy (training mode) with each mitigation",
            lambda: P.axis_heatmap(c, "mitigation", "train/accuracy", label="training accuracy, last epoch"),
            "Accuracy over the last epoch's batches in training mode. Where it is far above the test "
            "accuracy of a batch-norm cell, inference with batch norm's moving statistics lags: " + _bn_lag(c) + ".",
        ),
    ]


def _bn_lag(c: pd.DataFrame) -> str:
    bn = c[c["mitigation"] == "batch_norm"].sort_values(["activation", "depth"])
    return (
        "; ".join(
            f"{r['activation']} depth {r['depth']}: training {r['train/accuracy']:.2f}, train set in "
            f"inference mode {r['eval_train/accuracy']:.2f}, test {r['test/accuracy']:.2f}"
            for _, r in bn.iterrows()
        )
        or "no batch-norm cells"
    )


@register("width")
def width(s, lo, hi):
    c = _done(s.cells)
    acc = c.groupby(["activation", "width"])["test/accuracy"].mean()
    t = c.groupby("width")["time/epoch_s"].mean()
    metrics = [
        ("test/accuracy", "test accuracy", False),
        ("time/epoch_s", "seconds per epoch", True),
        (verdicts.RATIO_INIT, "first / last RMS gradient (init)", True),
    ]
    return [
        Figure(
            "width_effects",
            "Accuracy, cost and gradient ratio against width",
            lambda: P.metrics_vs(c, "width", metrics),
            "Test accuracy: "
            + ", ".join(f"{a} w{w} {v:.3f}" for (a, w), v in acc.items())
            + ". Seconds per epoch: "
            + ", ".join(f"w{w} {v:.2f}" for w, v in t.items())
            + ".",
        )
    ]
