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
from study.report.sections.registry import Figure, criteria, register
from study.report.style import palette

# The edge-of-stability rules when a sweep's parent run carries no `criteria` tag (sweeps before
# it existed); the preset's YAML fixes them before running (conf/experiment/edge_of_stability.yaml).
EOS_DEFAULTS = {
    "reach": 0.95,  # at the edge from the first measured step with λ_max >= reach·2/η (from below)
    "band": [0.8, 1.3],  # then the median λ_max from that step on, over 2/η, lies in this band
    "controls": [],  # step sizes predicted never to reach reach·2/η in the budget, λ_max still rising
}


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
    curv: pd.DataFrame, hue: str, facet: str | None, two_over_lr: bool, limit: str = "2/η"
) -> plt.Figure | None:
    """λ_max of the training loss against steps, a line per value of `hue`; with `two_over_lr`,
    dashed lines at each run's `curv/two_over_lr` in the same colour (the stability threshold of
    gradient descent, 2/η; (2 + 2β)/η with momentum β: `limit` names it)."""
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
                ax.axhline(float(thr.median()), color=pal[h], ls="--", lw=1.2, label=f"{limit} = {thr.median():.3g}")
        ax.set(xlabel="train steps", ylabel="λ_max of the training loss (log scale)")
        ax.set_title(f or "")
        _plain_log(ax)
        ax.legend(fontsize=7)
    return fig


def eos_regime(lam0: float, two_over_lr: float, lr: float, rules: dict) -> str:
    """The class a run is in before its first update, from λ_max at step 0 against 2/η: `control`
    (a step size the rules predict never reaches the edge in the budget), `sharpening` (λ_max(0) below
    2/η: progressive sharpening should carry it up to 2/η) or `catapult` (already above 2/η: the first
    steps are unstable and should throw it down to 2/η)."""
    if any(np.isclose(lr, c) for c in rules["controls"]):
        return "control"
    if not (np.isfinite(lam0) and np.isfinite(two_over_lr)):
        return "undetermined"  # no finite λ_max at step 0: the class cannot be told before training
    return "sharpening" if lam0 < two_over_lr else "catapult"


def eos_table(cells: pd.DataFrame, curv: pd.DataFrame, w: pd.DataFrame, rules: dict) -> pd.DataFrame:
    """Per run: η, seed, 2/η, λ_max at step 0, its class before training (eos_regime), the step at which
    it reached the edge (sharpening: first λ_max >= reach·2/η; catapult: first λ_max <= 2/η/reach;
    control: never expected), the median λ_max from that step on over 2/η, the training loss at that
    step and at the end, how many steps after it raised the loss, λ_max at the end against λ_max two
    thirds in (still rising?), and whether the run met its class's criterion:
    sharpening and catapult: reached the edge, the median is within `band` and the loss fell after it;
    control: max λ_max stays below reach·2/η and λ_max at the end is above both λ_max(0) and λ_max two
    thirds of the way in."""
    rows = []
    lo, hi = rules["band"]
    reach = float(rules["reach"])
    for r in cells.itertuples():
        lam = curv[(curv["run_id"] == r.run_id) & (curv["stat"] == "lambda_max")].sort_values("step")
        lam = lam[np.isfinite(lam["value"].astype(float))]
        thr = curv[(curv["run_id"] == r.run_id) & (curv["stat"] == "two_over_lr")]["value"]
        loss = w[w["run_id"] == r.run_id].sort_values("step")
        if lam.empty or not len(thr) or loss.empty:
            continue
        edge, end = float(thr.median()), int(lam["step"].max())
        lam0 = float(lam["value"].iloc[0]) if lam["step"].iloc[0] == 0 else np.nan
        regime = eos_regime(lam0, edge, float(r.lr), rules)
        at = lam["value"] <= edge / reach if regime == "catapult" else lam["value"] >= reach * edge
        # a control's entry is shown (it should have none) but not judged from
        entry = int(lam["step"][at].iloc[0]) if at.any() and regime != "undetermined" else None
        after = lam[lam["step"] >= entry]["value"] if entry is not None else pd.Series(dtype=float)
        ratio = float(after.median() / edge) if len(after) else np.nan
        tail = loss[loss["step"] >= entry] if entry is not None else loss.iloc[0:0]
        two_thirds = float(lam[lam["step"] <= 2 * end / 3]["value"].iloc[-1])
        lam_end = float(lam["value"].iloc[-1])
        fell = bool(len(tail) > 1 and tail["loss"].iloc[-1] < tail["loss"].iloc[0])
        if regime == "control":
            met = bool(lam["value"].max() < reach * edge and lam_end > lam0 and lam_end > two_thirds)
        elif regime == "undetermined":
            met = False
        else:
            met = bool(entry is not None and lo <= ratio <= hi and fell)
        rows.append(
            {
                "run": r.run_name,
                "lr": float(r.lr),
                "seed": int(r.seed),
                "two_over_lr": edge,
                "lambda_max_init": lam0,
                "regime": regime,
                "entry_step": entry,
                "ratio_after_entry": ratio,
                "max_ratio": float(lam["value"].max() / edge),
                "loss_at_entry": float(tail["loss"].iloc[0]) if len(tail) else np.nan,
                "loss_end": float(loss["loss"].iloc[-1]),
                "loss_fell": fell,
                "loss_rises_after_entry": int((np.diff(tail["loss"].to_numpy()) > 0).sum()) if len(tail) else None,
                "lambda_max_two_thirds": two_thirds,
                "lambda_max_end": lam_end,
                "met": met,
                "steps": end,
            }
        )
    return pd.DataFrame(rows)


_EOS_CLAIMS = {
    "sharpening": "λ_max(0) below 2/η: progressive sharpening carries λ_max up to 2/η, where it hovers while "
    "the loss keeps falling (Cohen et al. 2021, Fig. 1)",
    "catapult": "λ_max(0) above 2/η: the first steps are unstable and throw λ_max down to 2/η, where it hovers "
    "while the loss keeps falling (the catapult regime; Lewkowycz et al. 2020)",
    "control": "a step size small enough that 2/η is out of reach: λ_max keeps rising, never reaches 2/η",
    "undetermined": "no finite λ_max at step 0: the run cannot be classed before training",
}


def _eos_criterion(regime: str, rules: dict) -> str:
    lo, hi = rules["band"]
    if regime == "control":
        return f"max λ_max < {rules['reach']:g}·2/η, and λ_max at the end above λ_max(0) and above λ_max two thirds in"
    if regime == "undetermined":
        return "none: counted as not met"
    entry = f"≥ {rules['reach']:g}·2/η" if regime == "sharpening" else f"≤ 2/η / {rules['reach']:g}"
    return (
        f"reaches λ_max {entry}; the median λ_max from that step on within {lo:g}–{hi:g} × 2/η; "
        "the training loss lower at the end than at that step; in every seed"
    )


def _eos_claims(t: pd.DataFrame, rules: dict) -> str:
    rows = []
    for regime in ("sharpening", "catapult", "control", "undetermined"):
        g = t[t["regime"] == regime]
        if g.empty:
            continue
        etas = ", ".join(f"{v:g}" for v in sorted(g["lr"].unique()))
        k, seeds = int(g["met"].sum()), g["seed"].nunique()
        measured = f"{k} of {len(g)} runs (η {etas}; {seeds} seed{'s' if seeds != 1 else ''}, one initialisation each)"
        rows.append((_EOS_CLAIMS[regime], _eos_criterion(regime, rules), measured, k == len(g)))
    header = [
        "claim (class decided before training: by λ_max(0) against 2/η, or a control η listed in the rules)",
        "criterion",
        "measured",
        "reproduced",
    ]
    return md_table(header, [(a, b, c, "yes" if ok else "no") for a, b, c, ok in rows])


def _md(t: pd.DataFrame) -> str:
    header = [
        "run",
        "η",
        "2/η",
        "λ_max at step 0",
        "class",
        "step at the edge",
        "median λ_max after it / (2/η)",
        "max λ_max / (2/η)",
        "λ_max two thirds in → end",
        "training loss at the edge → end",
        "steps raising the loss",
        "met",
    ]
    f = lambda v, d=3: "—" if v is None or not np.isfinite(v) else f"{v:.{d}g}"  # noqa: E731
    rows = [
        (
            r.run,
            f"{r.lr:.3g}",
            f"{r.two_over_lr:.3g}",
            f"{r.lambda_max_init:.3g}",
            r.regime,
            "never" if r.entry_step is None or not np.isfinite(r.entry_step) else int(r.entry_step),
            f(r.ratio_after_entry),
            f(r.max_ratio),
            f"{r.lambda_max_two_thirds:.3g} → {r.lambda_max_end:.3g}",
            f"{f(r.loss_at_entry, 4)} → {r.loss_end:.4g}",
            "—"
            if r.loss_rises_after_entry is None or not np.isfinite(r.loss_rises_after_entry)
            else int(r.loss_rises_after_entry),
            "yes" if r.met else "no",
        )
        for r in t.sort_values(["lr", "seed"]).itertuples()
    ]
    return md_table(header, rows)


@register("edge_of_stability")
def edge_of_stability(s, view):
    rules, said = criteria(s.info, EOS_DEFAULTS)
    c = _done(s.cells)
    w = loss_by_step(s.epochs, s.curvature)
    t = eos_table(c, s.curvature, w, rules)
    summary = ((_eos_claims(t, rules) + "\n\n" + _md(t)) if len(t) else "No run recorded λ_max and 2/η.") + (
        f"\n\nRules from {said}. λ_max: top eigenvalue of the Hessian of the training loss on the whole "
        "training set (Lanczos on Hessian-vector products, `curv/lambda_max`), measured every "
        "`diagnostics.curvature.every_n_steps` steps; 2/η: where gradient descent on a quadratic turns unstable "
        "(`curv/two_over_lr`). A seed draws the initial weights and the training examples; the step sizes of "
        "one seed share both."
    )
    return [
        Figure(
            "eos_sharpness",
            "Sharpness λ_max against steps, with 2/η (Cohen et al. 2021, Fig. 1)",
            lambda: _eos_sharpness(s.curvature, c),
            summary,
        ),
        Figure(
            "eos_loss",
            "Training loss against steps",
            lambda: _eos_loss(w),
            "Full-batch loss per step (log scale), a line per seed; at the edge of stability it keeps falling, "
            "not monotonically.",
        ),
    ]


def _eos_sharpness(curv: pd.DataFrame, cells: pd.DataFrame) -> plt.Figure | None:
    """λ_max against steps (log scale), a line per run coloured by η, with each η's 2/η dashed."""
    lam = curv[curv["stat"] == "lambda_max"]
    if lam.empty:
        return None
    if "lr" not in lam:  # the curvature table carries each run's axes; else the cells table's
        lam = lam.assign(lr=lam["run_id"].map(cells.set_index("run_id")["lr"].astype(float)))
    pal = palette(lam["lr"])
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for eta, g in lam.groupby(lam["lr"].astype(str)):
        for i, (_, run) in enumerate(g.groupby("run_id")):
            run = run.sort_values("step")
            ax.plot(run["step"], run["value"], color=pal[eta], lw=1.2, label=f"η {eta}" if i == 0 else None)
        thr = curv[(curv["stat"] == "two_over_lr") & curv["run_id"].isin(g["run_id"])]["value"]
        if len(thr):
            ax.axhline(float(thr.median()), color=pal[eta], ls="--", lw=1.0, label=f"2/η = {thr.median():.3g}")
    ax.set(xlabel="train steps", ylabel="λ_max of the training loss (log scale)")
    _plain_log(ax)
    ax.legend(fontsize=7, ncol=2)
    return fig


def _eos_loss(w: pd.DataFrame) -> plt.Figure | None:
    if w.empty:
        return None
    pal = palette(w["lr"])
    fig, ax = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
    for lr, g in w.groupby(w["lr"].astype(str)):
        for i, (_, run) in enumerate(g.groupby("run_id")):
            run = run.sort_values("step")
            ax.plot(run["step"], run["loss"], color=pal[lr], lw=1.0, label=f"η {lr}" if i == 0 else None)
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
