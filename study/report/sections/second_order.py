"""Report sections of the second-order presets: `second_order` (Newton against first-order methods)
and `edge_of_stability` (Cohen et al. 2021). Figures are pure (tidy DataFrame in, Figure out);
captions and the edge-of-stability table carry the measured numbers.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from study import contract
from study.report.md import md_table
from study.report.sections.registry import Figure, register
from study.report.style import palette

# Fixed before the edge-of-stability preset was first run (docs/second_order.md): the median
# λ_max over the last third of training, divided by 2/η, should lie in this range (Cohen et al.
# find it at or just above 1).
EOS_TOLERANCE = (0.8, 1.3)


def _done(c: pd.DataFrame) -> pd.DataFrame:
    return c[c[contract.OUTCOME].isin(contract.RAN)]


def curvature_seconds(curv: pd.DataFrame) -> pd.DataFrame:
    """run_id, step, seconds spent measuring curvature up to and including that step (cumulative)."""
    t = curv[curv["stat"] == "seconds"].sort_values(["run_id", "step"])
    return t.assign(cum=t.groupby("run_id")["value"].cumsum())[["run_id", "step", "cum"]]


def loss_by_step(epochs: pd.DataFrame, curv: pd.DataFrame) -> pd.DataFrame:
    """Per run and epoch: the epoch's training loss (Keras's mean over its steps, each computed
    before its update), `step` the mean number of updates done when those losses were computed
    (full batch: the epoch itself), and `seconds` of training at the epoch's end without the
    curvature measurements."""
    e = epochs[epochs["metric"].isin(["train/loss", "time/elapsed_s"])]
    w = e.pivot_table(index=["run_id", "epoch"], columns="metric", values="value").reset_index()
    spe = epochs.drop_duplicates("run_id").set_index("run_id")["steps_per_epoch"].astype(float)
    w["step"] = w["epoch"] * w["run_id"].map(spe) + (w["run_id"].map(spe) - 1) / 2
    end = (w["epoch"] + 1) * w["run_id"].map(spe)  # steps taken at the epoch's end
    w["seconds"] = w["time/elapsed_s"]
    if not curv.empty:
        cs = curvature_seconds(curv)
        spent = [
            # measured at the start of a step before the epoch's end (the one after the last step is not)
            cs[(cs["run_id"] == r) & (cs["step"] < s)]["cum"].max() if (cs["run_id"] == r).any() else 0.0
            for r, s in zip(w["run_id"], end)
        ]
        w["seconds"] = w["seconds"] - np.nan_to_num(np.asarray(spent, dtype=float))
    keys = epochs.drop_duplicates("run_id").set_index("run_id")
    for col in ("optimizer", "model", "lr", "seed"):
        if col in keys:
            w[col] = w["run_id"].map(keys[col])
    return w.rename(columns={"train/loss": "loss"})


_PLAIN = FuncFormatter(lambda v, _: f"{v:.3g}")


def _plain_log(ax, axis: str = "y") -> None:
    """Log scale with plain numbers on the ticks (not 1.36 × 10⁰); minor ticks labelled only when
    the axis spans less than 20×. Call after plotting."""
    getattr(ax, f"set_{axis}scale")("log")
    lo, hi = getattr(ax, f"get_{axis}lim")()
    one = getattr(ax, f"{axis}axis")
    one.set_major_formatter(_PLAIN)
    one.set_minor_formatter(_PLAIN if lo > 0 and hi / lo < 20 else NullFormatter())


def loss_vs_steps_and_time(w: pd.DataFrame) -> plt.Figure | None:
    """Training loss (log scale) against steps (top row) and against seconds of training without
    curvature measurements (bottom row); a column per model, a line per optimizer (mean over seeds)."""
    if w.empty:
        return None
    kinds = sorted(w["model"].astype(str).unique())
    pal = palette(w["optimizer"])
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.6 * len(kinds), 6.2), squeeze=False, layout="constrained")
    for c, kind in enumerate(kinds):
        sub = w[w["model"].astype(str) == kind]
        for opt, g in sub.groupby(sub["optimizer"].astype(str)):
            m = g.groupby("epoch")[["step", "loss", "seconds"]].mean()
            axes[0, c].plot(m["step"], m["loss"], marker=".", color=pal[opt], label=opt)
            axes[1, c].plot(m["seconds"], m["loss"], marker=".", color=pal[opt], label=opt)
        axes[0, c].set(title=f"{kind}", xlabel="train steps", ylabel="training loss")
        axes[1, c].set(xlabel="seconds of training (curvature excluded; log scale)", ylabel="training loss")
        for ax in axes[:, c]:
            _plain_log(ax)
        _plain_log(axes[1, c], "x")
    axes[0, -1].legend(title="optimizer", fontsize=8)
    return fig


def sharpness_over_training(
    curv: pd.DataFrame, hue: str, facet: str | None, two_over_lr: bool, log: bool = True
) -> plt.Figure | None:
    """λ_max of the training loss against steps, a line per value of `hue`; with `two_over_lr`,
    dashed lines at each run's 2/η in the same colour (the stability threshold of gradient descent)."""
    lam = curv[curv["stat"] == "lambda_max"]
    if lam.empty:
        return None
    facets = sorted(lam[facet].astype(str).unique()) if facet else [None]
    pal = palette(lam[hue])
    fig, axes = plt.subplots(1, len(facets), figsize=(4.8 * len(facets), 3.6), squeeze=False, layout="constrained")
    for c, f in enumerate(facets):
        ax = axes[0, c]
        sub = lam if f is None else lam[lam[facet].astype(str) == f]
        for h, g in sub.groupby(sub[hue].astype(str)):
            m = g.groupby("step")["value"].mean()
            ax.plot(m.index, m.values, marker=".", color=pal[h], label=f"{ {'lr': 'η'}.get(hue, hue) } {h}")
            thr = curv[(curv["stat"] == "two_over_lr") & curv["run_id"].isin(g["run_id"])]["value"]
            if two_over_lr and len(thr):
                ax.axhline(float(thr.median()), color=pal[h], ls="--", lw=1.2, label=f"2/η = {thr.median():.3g}")
        ax.set(xlabel="train steps", ylabel="λ_max of the training loss" + (" (log scale)" if log else ""))
        ax.set_title(f or "")
        if log:
            _plain_log(ax)
        ax.legend(fontsize=7)
    return fig


def eos_table(cells: pd.DataFrame, curv: pd.DataFrame, w: pd.DataFrame) -> pd.DataFrame:
    """Per run: η, 2/η, the median λ_max over the last third of its steps, their ratio, whether it is
    within EOS_TOLERANCE, the training loss at the start of the last third and at the end, and how
    many steps of the last third raised the loss (non-monotone descent)."""
    rows = []
    lo, hi = EOS_TOLERANCE
    for r in cells.itertuples():
        lam = curv[(curv["run_id"] == r.run_id) & (curv["stat"] == "lambda_max")].sort_values("step")
        thr = curv[(curv["run_id"] == r.run_id) & (curv["stat"] == "two_over_lr")]["value"]
        loss = w[w["run_id"] == r.run_id].sort_values("step")
        if lam.empty or not len(thr) or loss.empty:
            continue
        end = lam["step"].max()
        tail = lam[lam["step"] >= 2 * end / 3]["value"]
        last = loss[loss["step"] >= 2 * loss["step"].max() / 3]["loss"]
        ratio = float(tail.median() / thr.median())
        rows.append(
            {
                "run": r.run_name,
                "lr": float(r.lr),
                "two_over_lr": float(thr.median()),
                "lambda_max_init": float(lam["value"].iloc[0]),
                "lambda_max_last_third": float(tail.median()),
                "ratio": ratio,
                "within_tolerance": bool(lo <= ratio <= hi),
                "loss_start_last_third": float(last.iloc[0]),
                "loss_end": float(last.iloc[-1]),
                "loss_fell": bool(last.iloc[-1] < last.iloc[0]),
                "loss_rises_in_last_third": int((np.diff(last.to_numpy()) > 0).sum()),
                "steps": int(end),
            }
        )
    return pd.DataFrame(rows)


def _md(t: pd.DataFrame) -> str:
    header = [
        "run",
        "η",
        "2/η",
        "λ_max at step 0",
        "median λ_max, last third",
        "ratio to 2/η",
        f"within {EOS_TOLERANCE[0]}–{EOS_TOLERANCE[1]}",
        "training loss, start of last third → end",
        "steps raising the loss",
    ]
    rows = [
        (
            r.run,
            f"{r.lr:.3g}",
            f"{r.two_over_lr:.3g}",
            f"{r.lambda_max_init:.3g}",
            f"{r.lambda_max_last_third:.3g}",
            f"{r.ratio:.3f}",
            "yes" if r.within_tolerance else "no",
            f"{r.loss_start_last_third:.4g} → {r.loss_end:.4g} ({'fell' if r.loss_fell else 'did not fall'})",
            r.loss_rises_in_last_third,
        )
        for r in t.itertuples()
    ]
    return md_table(header, rows)


@register("edge_of_stability")
def edge_of_stability(s, view):
    c = _done(s.cells)
    w = loss_by_step(s.epochs, s.curvature)
    t = eos_table(c, s.curvature, w)
    n_in = int(t["within_tolerance"].sum()) if len(t) else 0
    summary = (
        f"{n_in} of {len(t)} step sizes have a median λ_max over the last third of training within "
        f"{EOS_TOLERANCE[0]}–{EOS_TOLERANCE[1]} × 2/η (the tolerance fixed before the first run); the training "
        f"loss still fell over that third in {int(t['loss_fell'].sum()) if len(t) else 0} of {len(t)}."
    )
    lossfig = lambda: _eos_loss(w)  # noqa: E731
    return [
        Figure(
            "eos_sharpness",
            "Sharpness λ_max against steps, with 2/η (Cohen et al. 2021, Fig. 1)",
            lambda: sharpness_over_training(s.curvature, "lr", None, True, log=False),
            summary + "\n\n" + (_md(t) if len(t) else "No run recorded λ_max and 2/η.") + "\n\n"
            "λ_max: top eigenvalue of the Hessian of the training loss on the whole training set "
            "(Lanczos on Hessian-vector products, `curv/lambda_max`); 2/η: where gradient descent on a "
            "quadratic turns unstable (`curv/two_over_lr`). One seed per step size.",
        ),
        Figure(
            "eos_loss",
            "Training loss against steps",
            lossfig,
            "Full-batch loss per step (log scale); at the edge of stability it keeps falling, not monotonically.",
        ),
    ]


def _eos_loss(w: pd.DataFrame) -> plt.Figure | None:
    if w.empty:
        return None
    pal = palette(w["lr"])
    fig, ax = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
    for lr, g in w.groupby(w["lr"].astype(str)):
        g = g.sort_values("step")
        ax.plot(g["step"], g["loss"], color=pal[lr], label=f"η {lr}")
    ax.set(xlabel="train steps", ylabel="training loss (log scale)")
    _plain_log(ax)
    ax.legend(fontsize=8)
    return fig


def reach(w: pd.DataFrame, target: float) -> tuple[float, float]:
    """(steps, seconds) at which a run's mean-over-seeds training loss first reaches `target`."""
    m = w.groupby("epoch")[["step", "loss", "seconds"]].mean()
    hit = m[m["loss"] <= target]
    return (float(hit["step"].iloc[0]), float(hit["seconds"].iloc[0])) if len(hit) else (np.nan, np.nan)


@register("second_order")
def second_order(s, view):
    c = _done(s.cells)
    w = loss_by_step(s.epochs, s.curvature)
    parts, step_cost = [], {}
    for (kind, opt), g in w.groupby([w["model"].astype(str), w["optimizer"].astype(str)]):
        m = g.groupby("epoch")[["step", "seconds"]].mean()
        # seconds a step after the first epoch (which also traces the train step)
        step_cost[kind, opt] = (
            (m["seconds"].iloc[-1] - m["seconds"].iloc[0]) / (m["step"].iloc[-1] - m["step"].iloc[0])
            if len(m) > 1
            else m["seconds"].iloc[0] / m["step"].iloc[0]
        )
    for kind, sub in w.groupby(w["model"].astype(str)):
        finals = sub[sub["epoch"] == sub.groupby("run_id")["epoch"].transform("max")]
        by_opt = finals.groupby(finals["optimizer"].astype(str))
        final_loss = by_opt["loss"].mean()
        target = float(final_loss.max())
        per = []
        for opt in final_loss.index:
            n, t = reach(sub[sub["optimizer"].astype(str) == opt], target)
            acc = c[(c["model"].astype(str) == kind) & (c["optimizer"].astype(str) == opt)]["test/accuracy"].mean()
            reached = f"reached at step {n:.0f} after {t:.3g} s" if np.isfinite(n) else "not reached"
            per.append(
                f"{opt}: final loss {final_loss[opt]:.3f}, test accuracy {acc:.3f}, "
                f"{step_cost[kind, opt] * 1000:.3g} ms a step; loss {target:.3f} {reached}"
            )
        parts.append(f"**{kind}** — " + "; ".join(per) + ".")
    kinds = sorted({k for k, o in step_cost if o == "newton"} & {k for k, o in step_cost if o == "sgd"})
    cost = (
        " A Newton epoch takes "
        + ", ".join(f"{k} {step_cost[k, 'newton'] / step_cost[k, 'sgd']:.3g}×" for k in kinds)
        + " the wall time of an SGD epoch (after the first; an epoch is one full-batch step and its validation"
        " pass, curvature measurements excluded): an epoch-time ratio, not the cost of the step alone, which"
        " scripts/bench_curvature.py measures (reports/benchmarks/curvature.json)."
        if kinds
        else ""
    )
    return [
        Figure(
            "so_loss",
            "Training loss against steps and against wall time",
            lambda: loss_vs_steps_and_time(w),
            "\n\n".join(parts) + cost + " One seed per cell; learning rates are each optimizer's default, "
            "Newton's step is the damped full step (η = 1).",
        ),
        Figure(
            "so_sharpness",
            "Sharpness λ_max over training",
            lambda: sharpness_over_training(s.curvature, "optimizer", "model", True),
            "Top Hessian eigenvalue of the training loss on the first "
            "`diagnostics.curvature.examples` training examples; dashed: 2/η for SGD and (2 + 2β)/η for "
            "momentum, the step sizes' stability thresholds.",
        ),
    ]
