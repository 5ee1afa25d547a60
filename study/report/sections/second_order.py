"""Report sections of the second-order presets: `second_order` (Newton against first-order methods)
and `edge_of_stability` (Cohen et al. 2021). Figures are pure (tidy DataFrame in, Figure out);
captions and the edge-of-stability table carry the measured numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from study import contract, tracking
from study.report.md import md_table
from study.report.sections.grid_pilot import choose
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
    (full batch: the epoch itself), and `seconds` of training at the epoch's end: the seconds
    inside the train steps where the run timed them (`time/steps_s`, `train.time_steps`), else the
    training time without the curvature measurements (which then includes each epoch's validation
    and logging)."""
    e = epochs[epochs["metric"].isin(["train/loss", "time/elapsed_s", "time/steps_s"])]
    w = e.pivot_table(index=["run_id", "epoch"], columns="metric", values="value").reset_index()
    spe = epochs.drop_duplicates("run_id").set_index("run_id")["steps_per_epoch"].astype(float)
    w["step"] = w["epoch"] * w["run_id"].map(spe) + (w["run_id"].map(spe) - 1) / 2
    end = (w["epoch"] + 1) * w["run_id"].map(spe)  # steps taken at the epoch's end
    w["seconds"] = w["time/elapsed_s"]
    if "time/steps_s" in w:
        timed = w["time/steps_s"].notna()
        w.loc[timed, "seconds"] = w.loc[timed, "time/steps_s"]
        curv = curv[~curv["run_id"].isin(w.loc[timed, "run_id"])] if not curv.empty else curv
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


def loss_vs_budget(w: pd.DataFrame) -> plt.Figure | None:
    """Training loss (log scale) against steps (top row), gradient-equivalents (middle) and seconds
    (bottom; seconds_after_first_step), all on log axes from the first update (Newton's 10 steps
    beside the others' 400); a column per model, a line per optimizer (mean over seeds)."""
    if w.empty:
        return None
    kinds = sorted(w["model"].astype(str).unique())
    pal = palette(w["optimizer"])
    rows = [
        ("step", "train steps (log scale)"),
        ("ge", "gradient-equivalents (log scale)"),
        ("after", "seconds (log; step 1 at step 2's length)"),
    ]
    fig, axes = plt.subplots(3, len(kinds), figsize=(4.6 * len(kinds), 9.0), squeeze=False, layout="constrained")
    for c, kind in enumerate(kinds):
        sub = w[w["model"].astype(str) == kind]
        drawn = [False] * len(rows)
        for opt, g in sub.groupby(sub["optimizer"].astype(str)):
            m = g.groupby("epoch")[["step", "ge", "after", "loss"]].mean()
            for r, (col, _) in enumerate(rows):
                mm = m[m[col] > 0]  # log axes: from the first update counted
                axes[r, c].plot(mm[col], mm["loss"], marker=".", color=pal[opt], label=opt)
                drawn[r] |= bool(len(mm))
        for r, (_, label) in enumerate(rows):
            ax = axes[r, c]
            ax.set(title=kind if r == 0 else "", xlabel=label, ylabel="training loss")
            if not drawn[r]:
                ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center")
                continue
            _plain_log(ax)
            _plain_log(ax, "x")
    axes[0, -1].legend(title="optimizer", fontsize=8)
    return fig


def sharpness_over_training(
    curv: pd.DataFrame, hue: str, facet: str | None, two_over_lr: bool, limit: str = "2/η", per_run: bool = False
) -> plt.Figure | None:
    """λ_max of the training loss against steps, a line per value of `hue` (the mean over its runs;
    with `per_run`, each run as a thin line too); with `two_over_lr`, dashed lines at each run's
    `curv/two_over_lr` in the same colour (one grey line where every `hue` shares it): the stability
    threshold of gradient descent, 2/η; (2 + 2β)/η with momentum β: `limit` names it."""
    lam = curv[curv["stat"] == "lambda_max"]
    if lam.empty:
        return None
    facets = sorted(lam[facet].astype(str).unique()) if facet else [None]
    pal = palette(lam[hue])
    fig, axes = plt.subplots(1, len(facets), figsize=(4.8 * len(facets), 3.6), squeeze=False, layout="constrained")
    for c, f in enumerate(facets):
        ax = axes[0, c]
        sub = lam if f is None else lam[lam[facet].astype(str) == f]
        limits = {}
        for h, g in sub.groupby(sub[hue].astype(str)):
            m = g.groupby("step")["value"].mean()
            ax.plot(m.index, m.values, marker=".", color=pal[h], label=f"{ {'lr': 'η'}.get(hue, hue) } {h}")
            if per_run:
                for _, one in g.groupby("run_id"):
                    ax.plot(one["step"], one["value"], lw=0.6, alpha=0.45, color=pal[h])
            thr = curv[(curv["stat"] == "two_over_lr") & curv["run_id"].isin(g["run_id"])]["value"]
            if two_over_lr and len(thr):
                limits[h] = float(thr.median())
        shared = len(limits) > 1 and np.allclose(list(limits.values()), next(iter(limits.values())))
        for h, v in ({"": next(iter(limits.values()))} if shared else limits).items():
            ax.axhline(v, color="0.4" if shared else pal[h], ls="--", lw=1.2, label=f"{limit} = {v:.3g}")
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


BENCH = tracking.REPO_ROOT / "reports" / "benchmarks" / "curvature.json"


def step_costs(bench: Path = BENCH) -> dict[str, dict[str, float]]:
    """Per model kind, the measured cost of a Hessian-vector product and of a loss evaluation in
    gradients (scripts/bench_curvature.py's `hvp_over_gradient`, `forward_over_gradient` of its
    `second_order_<kind>` models), with the file's commit; {} when it is missing."""
    if not bench.exists():
        return {}
    b = json.loads(bench.read_text())
    out = {}
    for name, r in b.get("results", {}).items():
        if name.startswith("second_order_") and "hvp_over_gradient" in r and "forward_over_gradient" in r:
            out[name.removeprefix("second_order_")] = {
                "hvp": float(r["hvp_over_gradient"]),
                "forward": float(r["forward_over_gradient"]),
                "commit": str(b.get("machine", {}).get(contract.GIT_COMMIT, "unknown"))[:7],
            }
    return out


def gradient_equivalents(steps: pd.DataFrame, w: pd.DataFrame, costs: dict, backtracks: int = 8) -> pd.Series:
    """Per row of `w` (run, epoch: the loss after `epoch` updates), the gradient-equivalents spent on
    those updates: a first-order step is one gradient; a Newton step is its gradient, its CG
    iterations' Hessian-vector products and its loss evaluations (1 for a full step, k + 1 for the
    step halved k times, `backtracks` (Newton's default 8) when none lowered the loss), each at its
    measured cost in gradients (`costs[kind]`). NaN for a Newton run of a kind without measured
    costs, or whose per-step record (`newton/cg_iterations`, `newton/step_scale`) misses a step."""
    o = steps[(steps["group"] == "optimizer") & steps["stat"].isin(["cg_iterations", "step_scale"])]
    per = o.pivot_table(index=["run_id", "step"], columns="stat", values="value")
    ge = pd.Series(w["epoch"].astype(float).to_numpy(), index=w.index)
    newton = w["optimizer"].astype(str) == "newton"
    for run in w.loc[newton, "run_id"].unique():
        rows = w.index[w["run_id"] == run]
        kind = str(w.loc[rows[0], "model"])
        n = int(w.loc[rows, "epoch"].max())  # updates before the last logged loss
        g = per.loc[run] if run in per.index.get_level_values(0) else None
        if kind not in costs or g is None or not set(range(n)) <= set(g.index.astype(int)):
            ge[rows] = np.nan
            continue
        g = g.reindex(range(n))
        scale = g["step_scale"].to_numpy()
        tries = np.where(scale > 0, np.log2(1.0 / np.where(scale > 0, scale, 1.0)) + 1, backtracks)
        cost = 1.0 + g["cg_iterations"].to_numpy() * costs[kind]["hvp"] + tries * costs[kind]["forward"]
        spent = np.concatenate([[0.0], np.cumsum(cost)])  # before update k: the first k updates
        ge[rows] = [spent[int(e)] for e in w.loc[rows, "epoch"]]
    return ge


def seconds_after_first_step(w: pd.DataFrame) -> pd.Series:
    """Per row of `w` (the loss after `epoch` full-batch updates): the seconds those updates took,
    curvature measurements excluded, with the first epoch's tracing taken out: that epoch counted at
    the second's length (t_k at the end of epoch k: t_(e-1) - t_0 + (t_1 - t_0) for e >= 1; 0 at e = 0).
    Each epoch's validation pass is included."""
    w = w.sort_values(["run_id", "epoch"])
    t = w.groupby("run_id")["seconds"]
    t0 = w["run_id"].map(w[w["epoch"] == 0].set_index("run_id")["seconds"])
    t1 = w["run_id"].map(w[w["epoch"] == 1].set_index("run_id")["seconds"])
    typical = (t1 - t0).fillna(t0)  # a run of one epoch: its only epoch
    after = t.shift(1) - t0 + typical
    return after.where(w["epoch"] > 0, 0.0).clip(lower=0.0).reindex(w.index)


def at_budget(w: pd.DataFrame, col: str, budget: float) -> pd.Series:
    """Per run: the training loss after the most updates whose `col` (gradient-equivalents,
    seconds) is within `budget`; a loss that turned non-finite stays infinite from there (a run
    that diverged is worse than any finite loss, not its last finite one)."""
    w = w.sort_values(["run_id", "epoch"]).copy()
    bad = ~np.isfinite(w["loss"].astype(float))
    w["loss"] = w["loss"].where(~bad.groupby(w["run_id"]).cummax(), np.inf)
    within = w[w[col] <= budget * (1 + 1e-9)]
    return within.groupby("run_id")["loss"].last()


def budget_table(w: pd.DataFrame, finished: set | None = None) -> pd.DataFrame:
    """Per model and optimizer: the learning rate, seeds, and the mean training loss after its steps,
    at the equal gradient-equivalent budget and at the equal seconds budget (each the smallest any
    run of that model that finished spent: runs that stopped early do not set it); and Newton
    against each first-order optimizer paired by seed (the seeds draw the same initial weights for
    every optimizer): in how many seeds Newton's loss is lower at each budget (a diverged run's loss
    counts as infinite)."""
    rows = []
    for kind, sub in w.groupby(w["model"].astype(str)):
        sub = sub.copy()
        last = sub[sub["epoch"] == sub.groupby("run_id")["epoch"].transform("max")]
        done = last[last["run_id"].isin(finished)] if finished is not None else last
        done = done if len(done) else last
        ge_budget, t_budget = float(done["ge"].min()), float(done["after"].min())
        at_ge, at_t = at_budget(sub, "ge", ge_budget), at_budget(sub, "after", t_budget)
        at_end = at_budget(sub, "epoch", float(sub["epoch"].max()))
        seed = sub.drop_duplicates("run_id").set_index("run_id")["seed"]
        by = {}
        for opt, g in sub.groupby(sub["optimizer"].astype(str)):
            runs = pd.Index(g["run_id"].unique())
            by[opt] = {k: v.reindex(runs) for k, v in (("steps", at_end), ("ge", at_ge), ("t", at_t))}
        for opt, g in sub.groupby(sub["optimizer"].astype(str)):
            mine = last[last["optimizer"].astype(str) == opt]
            row = {
                "model": kind,
                "optimizer": opt,
                "lr": float(g["lr"].astype(float).iloc[0]) if "lr" in g else np.nan,
                "seeds": int(g["run_id"].nunique()),
                "steps": int(mine["epoch"].max()),
                "ge_budget": ge_budget,
                "t_budget": t_budget,
                "loss_steps": float(by[opt]["steps"].mean()),
                "loss_ge": float(by[opt]["ge"].mean()),
                "loss_t": float(by[opt]["t"].mean()),
                "ge_total": float(mine["ge"].mean()),
                "newton_lower": "",
            }
            if opt != "newton" and "newton" in by:
                said = []
                for name, key in (("steps", "steps"), ("gradient-equivalents", "ge"), ("seconds", "t")):
                    a = by["newton"][key].groupby(seed).first()  # one run per seed (a rerun: the first)
                    b = by[opt][key].groupby(seed).first()
                    both = a.index.intersection(b.index)
                    both = both[a[both].notna().to_numpy() & b[both].notna().to_numpy()]  # unmeasured: left out
                    said.append(f"{name} {int((a[both] < b[both]).sum())}/{len(both)}" if len(both) else f"{name} n/a")
                    row[f"lower_{key}"], row[f"pairs_{key}"] = int((a[both] < b[both]).sum()), len(both)
                row["newton_lower"] = ", ".join(said)
            rows.append(row)
    return pd.DataFrame(rows)


SO_DEFAULTS = {"decide_share": 1.0}  # Newton lower (or higher) in at least this share of seed pairs decides


def decide(lower: float, pairs: float, share: float) -> str:
    """Newton against one optimizer at one budget, from the seed pairs where Newton's loss is lower:
    `lower` when at least `share` of them are, `higher` when at least `share` are not, else split."""
    if not pairs or not np.isfinite(pairs):
        return "not measured"
    k, n = int(lower), int(pairs)
    if k >= share * n:
        return f"Newton lower ({k}/{n})"
    if n - k >= share * n:
        return f"Newton not lower ({k}/{n})"
    return f"split ({k}/{n})"


def verdicts_md(t: pd.DataFrame, share: float) -> str:
    """Per model and first-order optimizer: the decision at equal gradient-equivalents and at equal
    seconds (and, for reference, after the steps each ran)."""
    rows = [
        (
            r.model,
            r.optimizer,
            *(decide(getattr(r, f"lower_{k}"), getattr(r, f"pairs_{k}"), share) for k in ("ge", "t", "steps")),
        )
        for r in t.itertuples()
        if r.optimizer != "newton" and hasattr(r, "pairs_ge")
    ]
    header = [
        "model",
        "Newton against",
        "at equal gradient-equivalents",
        "at equal seconds",
        "after the steps each ran",
    ]
    return md_table(header, rows) if rows else ""


def _budget_md(t: pd.DataFrame) -> str:
    header = [
        "model",
        "optimizer",
        "learning rate",
        "seeds",
        "loss after the steps",
        "loss at equal gradient-equivalents",
        "loss at equal seconds",
        "gradient-equivalents spent",
        "Newton lower, seeds (steps, gradient-eq., seconds)",
    ]
    return md_table(
        header,
        [
            (
                r.model,
                r.optimizer,
                f"{r.lr:.3g}",
                r.seeds,
                f"{r.loss_steps:.3f} ({r.steps})",
                f"{r.loss_ge:.3f} ({r.ge_budget:.3g})",
                f"{r.loss_t:.3f} ({r.t_budget:.3g} s)",
                f"{r.ge_total:.4g}",
                r.newton_lower or "—",
            )
            for r in t.itertuples()
        ],
    )


@register("second_order")
def second_order(s, view):
    w = loss_by_step(s.epochs, s.curvature)
    costs = step_costs()
    if not w.empty:
        w["ge"] = gradient_equivalents(s.steps, w, costs)
        w["after"] = seconds_after_first_step(w)
    finished = set(s.cells.loc[s.cells[contract.OUTCOME] == contract.FINISHED, "run_id"])
    t = budget_table(w, finished) if not w.empty else pd.DataFrame()
    quoted = "; ".join(
        f"{k}: a Hessian-vector product {v['hvp']:.2f} gradients, a loss evaluation {v['forward']:.2f}"
        for k, v in sorted(costs.items())
    )
    commit = next(iter(costs.values()))["commit"] if costs else None
    cost_note = (
        f"Costs per step from scripts/bench_curvature.py (reports/benchmarks/curvature.json, commit {commit}): "
        f"{quoted}. "
        if costs
        else "reports/benchmarks/curvature.json has no measured HVP and loss-evaluation costs: Newton's "
        "gradient-equivalents are not counted (run `make bench`). "
    )
    timed = "time/steps_s" in set(s.epochs["metric"])
    seconds = (
        "the seconds inside the train steps (`time/steps_s`: no validation, logging or curvature measurement)"
        if timed
        else "seconds of training, curvature measurements excluded, each epoch's validation and logging included"
    )
    rules, said = criteria(s.info, SO_DEFAULTS)
    share = float(rules["decide_share"])
    decided = verdicts_md(t, share) if len(t) else ""
    caption = (
        (
            decided + f"\n\nDecided where Newton's loss is lower (or not lower) in at least {share:.0%} of the "
            f"seed pairs, else split. Rules from {said}.\n\n"
            if decided
            else ""
        )
        + (_budget_md(t) + "\n\n" if len(t) else "")
        + "Loss after the steps: the training loss after the last epoch's update count (in brackets); at "
        "equal gradient-equivalents: after the most updates within the smallest budget any finished run of "
        f"that model spent (in brackets); at equal seconds: likewise in {seconds}, the first step "
        "(which traces the train step) counted at the second's length. A diverged run's loss counts as infinite. "
        "A first-order step is one gradient; "
        "a Newton step its gradient, its CG iterations' Hessian-vector products and its loss evaluations "
        "(backtracking). " + cost_note + "Learning rates: second_order_pilot's choice on seed 100 (the lowest "
        "final training loss on a log grid up to each step's stability limit; `lr_ceiling`, `so_lr_scale` "
        "in conf/experiment/second_order.yaml); Newton's damped full step η = 1. Newton lower: in how many "
        "seeds Newton's loss is below the optimizer's at that budget, paired by seed (a seed draws the same "
        "initial weights for every optimizer)."
    )
    return [
        Figure(
            "so_loss",
            "Training loss against steps, gradient-equivalents and wall time",
            lambda: loss_vs_budget(w),
            caption,
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


AT_LIMIT = "at the grid's top (the ceiling: a stability limit at lr_ceiling's λ_max)"
BOUNDED = ("sgd", "momentum")  # optimizers whose ceiling is a stability limit; Adam's top is a choice


def pilot_choice(cells: pd.DataFrame) -> pd.DataFrame:
    """grid_pilot.choose per model × optimizer on the final training loss; a choice at the top of the
    grid is at the ceiling for SGD and momentum (the stability limit at the λ_max(0) lr_ceiling was
    computed from, by design), an edge to widen for Adam."""
    chosen = choose(cells, keys=["model", "optimizer"], metric="train/loss", top=AT_LIMIT)
    unbounded = chosen["chosen"] & (chosen["note"] == AT_LIMIT) & ~chosen["optimizer"].astype(str).isin(BOUNDED)
    chosen.loc[unbounded, "note"] = "edge: widen the range"
    return chosen


@register("second_order_pilot")
def second_order_pilot(s, view):
    c = s.cells
    chosen = pilot_choice(c)
    rows, block = [], {}
    for (kind, opt), sub in chosen.groupby(["model", "optimizer"]):
        pick = sub[sub["chosen"]]
        losses = ", ".join(f"×{r.lr_scale:g} {r.loss:.3f}" for r in sub.itertuples())
        if pick.empty:
            rows.append((kind, opt, "none", "n/a", "every multiple diverged", losses))
            continue
        p = pick.iloc[0]
        block.setdefault(opt, {})[kind] = float(p["lr_scale"])
        rows.append((kind, opt, f"×{p['lr_scale']:g}", f"{p['lr']:.3g}", p["note"], losses))
    snippet = "so_lr_scale:\n" + "\n".join(
        f"  {opt}: {{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(kinds.items(), reverse=True)) + "}"
        for opt, kinds in sorted(
            block.items(),
            key=lambda kv: ["sgd", "momentum", "adam"].index(kv[0]) if kv[0] in ("sgd", "momentum", "adam") else 9,
        )
    )
    table = md_table(
        ["model", "optimizer", "chosen", "learning rate", "note", "final training loss per multiple"], rows
    )
    return [
        Figure(
            "so_pilot_loss",
            "Final training loss against the learning rate (multiple of the stability ceiling)",
            lambda: _pilot_figure(c, chosen),
            table
            + "\n\nChosen per model and optimizer on seed(s) "
            + ", ".join(map(str, sorted(c["seed"].unique())))
            + " (lowest final training loss; inf: diverged). The block conf/experiment/second_order.yaml "
            "commits:\n\n```yaml\n" + snippet + "\n```",
        )
    ]


def _pilot_figure(cells: pd.DataFrame, chosen: pd.DataFrame) -> plt.Figure | None:
    """Final training loss against the multiple of the ceiling, a panel per model, a line per optimizer."""
    if cells.empty:
        return None
    kinds = sorted(cells["model"].astype(str).unique())
    pal = palette(cells["optimizer"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.6), squeeze=False, layout="constrained")
    for j, kind in enumerate(kinds):
        ax = axes[0, j]
        for opt, g in cells[cells["model"].astype(str) == kind].groupby("optimizer"):
            m = g.groupby("lr_scale")["train/loss"].mean()
            ax.plot(m.index, m.values, "o-", ms=3, color=pal[opt], label=opt)
        best = chosen[(chosen["model"].astype(str) == kind) & chosen["chosen"]]
        ax.plot(best["lr_scale"], best["loss"].where(np.isfinite(best["loss"])), "*", ms=12, color="k")
        ax.set(title=kind, xlabel="learning rate / ceiling", ylabel="final training loss (log scale)")
        _plain_log(ax, "x")
        _plain_log(ax)  # the losses span 0.005-2: on a linear axis the best ones overlap at 0
    axes[0, -1].legend(title="optimizer (★ chosen)", fontsize=8)
    return fig
