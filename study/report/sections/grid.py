"""The generic report, registered for `grid`, `smoke` and `paper` and used for any preset without a
section of its own: accuracy by activation × optimizer × depth, the gradient and signal figures at one
depth and optimizer (`--depth`, `--optimizer`), captions with the measured numbers, the verdict of
every cell by depth and the numbers behind each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study import contract, verdicts
from study.report import collect, stats
from study.report import figures as F
from study.report.md import md_table
from study.report.sections.registry import Figure, Section, View, fmt, register, verdict_counts

_fmt = fmt


def pick(values, preferred):
    """`preferred` if it is among `values`, else the first of them (sorted), else None."""
    values = sorted(v for v in values if v is not None and v == v)
    return preferred if preferred in values else (values[0] if values else None)


def captions(s: collect.Sweep, depth: int, optimizer: str, lo: float, hi: float) -> dict[str, str]:
    """Each figure's caption, with the numbers measured (none for a figure without data)."""
    c, done = s.cells, s.cells[s.cells[contract.OUTCOME].isin(contract.RAN)]
    summ = stats.summary(c, extra=collect.extra_axes(c))
    several = bool((summ["n"] > 1).any())
    out = _accuracy_captions(c, done, summ, several)
    init = done[(done["depth"] == depth)].groupby("activation")[verdicts.RATIO_INIT].median()
    out["gradient_profile"] = (
        f"First/last RMS gradient ratio at initialisation, depth {depth}: "
        + ", ".join(f"{a} {_fmt(v)}" for a, v in init.items())
        + "."
    )
    out["ratio_vs_depth"] = (
        f"Shaded: ratios below {lo:g} (vanishing) and above {hi:g} (exploding); a ratio "
        "decides the verdict only for a cell that did not learn. Verdicts: " + verdict_counts(c) + "."
    )
    out |= _diagnostic_captions(s, depth, optimizer)
    out["gradient_heatmap"] = (
        f"Depth {depth}, {optimizer}: a dark band at low layer indices that stays dark over "
        "training is a vanishing gradient; bright bands that grow are exploding ones."
    )
    return out


def _accuracy_captions(c: pd.DataFrame, done: pd.DataFrame, summ: pd.DataFrame, several: bool) -> dict[str, str]:
    """The accuracy heatmap's (best cell per depth, odd outcomes) and accuracy against depth's."""
    out, best = {}, []
    for d, sub in summ.groupby("depth"):
        ranked = sub[np.isfinite(sub["mean"])].sort_values("mean", ascending=False)
        if not len(ranked):
            continue
        top = ranked.iloc[0]
        text = f"depth {d}: {top['activation']} + {top['optimizer']} " + (
            stats.fmt(top) if several else f"({top['mean']:.3f})"
        )
        if len(ranked) > 1 and several:
            nxt = ranked.iloc[1]
            extra = collect.extra_axes(c)
            if stats.shares_weights(c, top, nxt, extra):  # same seeds' weights: paired by seed (rule 3)
                pair = stats.paired(stats.runs_of(c, top, extra), stats.runs_of(c, nxt, extra))
                by = f"{top['mean'] - nxt['mean']:+.3f} paired by seed ({pair.text()})"
            else:
                by = stats.compare(top, nxt)
            text += f", ahead of {nxt['activation']} + {nxt['optimizer']} by {by}"
        best.append(text)
    odd = c[~c[contract.OUTCOME].isin(["finished"])]
    odd_text = "; ".join(f"{r.run_name} {r.outcome}" for r in odd.itertuples()) or "none"
    out["accuracy_heatmap"] = (
        f"Best cell per depth: {'; '.join(best) or 'none'}. "
        + (
            "Values: mean over seeds ± the half-width of its 95 % t interval where every seed trained or "
            "none did; k/n (m) where k of n seeds trained, m their mean (stats.py rules 1-2). "
            if several
            else "One seed per cell: no interval, and no difference here is resolved. "
        )
        + f"Cells not finished normally: {odd_text}."
    )
    trend = []
    for a, sub in done.groupby("activation"):
        by_d = sub.groupby("depth")["test/accuracy"].mean()
        if len(by_d) > 1:
            trend.append(f"{a} {by_d.iloc[0]:.2f} → {by_d.iloc[-1]:.2f}")
    out["accuracy_vs_depth"] = (
        "Mean test accuracy over optimizers, shallowest → deepest: "
        + (", ".join(trend) or "n/a")
        + (". Error bars: 95 % t interval over seeds." if several else ". One seed per cell: no error bars.")
    )
    return out


def _diagnostic_captions(s: collect.Sweep, depth: int, optimizer: str) -> dict[str, str]:
    """The captions of the signal, loss, saturation and histogram figures at one depth and optimizer."""
    out = {}
    sig = s.signal
    if len(sig):
        ends = []
        init = sig[(sig["phase"] == "init") & (sig["stat"] == "spread") & (sig["depth"] == depth)]
        for a, sub in init.groupby("activation"):
            m = sub.groupby("layer_index")["value"].median()
            ends.append(f"{a} {m.iloc[-1] / m.iloc[0]:.2g}")
        out["forward_signal"] = (
            f"Spread of each unit across examples, last hidden layer over first, at initialisation, "
            f"depth {depth}: " + ", ".join(ends) + ". Below the collapse threshold the deep "
            "layers' output barely depends on the input."
        )
    final = collect.final_epoch(s.epochs[s.epochs["depth"] == depth], "train/loss")
    final = final[np.isfinite(final["value"])]
    if len(final):
        r = final.loc[final["value"].idxmin()]
        out["loss_curves"] = (
            f"Lowest final training loss at depth {depth}: {r.activation} + {r.optimizer} ({r.value:.3f})."
        )
    st = s.steps[
        (s.steps["group"] == "act")
        & s.steps["stat"].isin(["saturation", "dead_frac"])
        & (s.steps["depth"] == depth)
        & (s.steps["optimizer"] == optimizer)
    ]
    if len(st):
        last = st[st["step"] == st.groupby("run_id")["step"].transform("max")]
        m = last.groupby(["activation", "stat"])["value"].mean()
        out["saturation"] = (
            "Mean over layers at the end of training: "
            + ", ".join(f"{a} {'saturated' if k == 'saturation' else 'dead'} {v:.2f}" for (a, k), v in m.items())
            + "."
        )
    h = s.histograms
    means = collect.backprop_layer_means(
        h[(h["depth"] == depth) & (h["optimizer"] == optimizer)] if len(h) else h, "activation"
    )
    if means:
        out["backprop_histograms"] = (
            "Mean log10 |dL/dh| at initialisation: "
            + "; ".join(
                f"{a} {m.iloc[0]:.1f} (layer 1) vs {m.iloc[-1]:.1f} (layer {m.index[-1]})" for a, m in means.items()
            )
            + "."
        )
    return out


def reason_table(cells: pd.DataFrame) -> str:
    """One row per cell: verdict, the numbers that decided it, test accuracy, and the verdict the
    rules gave when the cell trained (when it differs)."""
    rows = []
    for _, r in cells.sort_values("run_name").iterrows():
        then = r.get("verdict_at_training")
        note = (
            f" (at training: {then})" if then not in (r["verdict"], "unknown", None) and isinstance(then, str) else ""
        )
        rows.append((r["run_name"], f"{r['verdict']}{note}", r[contract.VERDICT_REASON], _fmt(r["test/accuracy"])))
    return md_table(["cell", "verdict", "reason", "test accuracy"], rows)


def contrast_table(cells: pd.DataFrame) -> str:
    """Optimizer against optimizer within each arm and depth, paired by seed (stats.py rule 3), with
    a first line that counts them."""
    t = stats.contrasts(cells, extra=collect.extra_axes(cells))
    if t.empty:
        return ""
    keys = [
        k
        for k in t.columns
        if k not in ("a", "b", "seeds", "mean_difference", "above", "below", "test", "p", "resolved", "text")
    ]
    rows = [(*(r[k] for k in keys), f"{r['a']} − {r['b']}", r["text"]) for _, r in t.iterrows()]
    ahead = t[t["resolved"]]
    tests = ", ".join(f"{k} {v}" for k, v in t["test"].value_counts().sort_index().items())
    head = (
        "Optimizer contrasts paired by seed (cells of one arm and depth start from the same weights; "
        f"`tables/contrasts.csv`): {len(ahead)} of {len(t)} differences resolved at p < {stats.ALPHA:g} "
        f"(tests: {tests}; on 3 seeds the sign test, used where a cell's seeds split, cannot reach it). "
        + (
            "Resolved: "
            + "; ".join(
                (f"{r['a']} > {r['b']}" if r["mean_difference"] > 0 else f"{r['b']} > {r['a']}")
                + f" ({', '.join(str(r[k]) for k in keys)})"
                for _, r in ahead.iterrows()
            )
            + "."
            if len(ahead)
            else ""
        )
    )
    return head + "\n\n" + md_table([*keys, "contrast", "test accuracy, per seed and test"], rows)


LOSS_REACHED = 0.75  # "steps to a loss": the first epoch end with training loss <= this × ln K


def budget_table(cells: pd.DataFrame, epochs: pd.DataFrame) -> str:
    """What the fixed budget measured, per cell: test accuracy (stats.py rules), training loss at the
    end of the budget (mean over seeds), and the steps each seed took to bring its training loss to
    LOSS_REACHED × ln K (epoch resolution; how many seeds got there)."""
    if epochs.empty or "steps_per_epoch" not in cells:
        return ""
    extra = collect.extra_axes(cells)
    summ = stats.summary(cells, extra=extra)
    loss = epochs[epochs["metric"] == "train/loss"]
    rows = []
    for _, row in summ.iterrows():
        runs = stats.runs_of(cells, row, extra)
        finals, reached = [], []
        for _, r in runs.iterrows():
            e = loss[loss["run_id"] == r["run_id"]].sort_values("epoch")
            if e.empty:
                continue
            finals.append(float(e["value"].iloc[-1]))
            k = float(r.get("num_classes", 10)) if np.isfinite(r.get("num_classes", np.nan)) else 10.0
            hit = e[e["value"] <= LOSS_REACHED * np.log(k)]
            if len(hit):
                reached.append(int((hit["epoch"].iloc[0] + 1) * r["steps_per_epoch"]))
        steps = (
            f"{int(np.median(reached))} ({len(reached)}/{len(finals)})"
            if reached
            else f"not in budget (0/{len(finals)})"
        )
        rows.append(
            (
                *(row[k] for k in ("activation", "optimizer", "depth")),
                stats.fmt(row),
                _fmt(float(np.mean(finals))) if finals else "n/a",
                steps,
            )
        )
    return (
        "What the fixed budget measures (trainability and early speed at the pilot's learning rates, not "
        f"a converged ranking; `grid_reference` trains the same cells longer): test accuracy, training loss "
        f"at the end (mean over seeds), and the median steps to a training loss of {LOSS_REACHED:g} ln K "
        "(epoch resolution; in brackets how many seeds got there).\n\n"
        + md_table(
            [
                "activation",
                "optimizer",
                "depth",
                "test accuracy",
                "final training loss",
                f"steps to {LOSS_REACHED:g} ln K",
            ],
            rows,
        )
    )


def verdict_table(cells: pd.DataFrame) -> str:
    depths = sorted(cells["depth"].dropna().unique())
    rows = []
    for (a, o), sub in cells.groupby(["activation", "optimizer"]):
        row = []
        for d in depths:
            cell = sub[sub["depth"] == d]
            if cell.empty:
                row.append("")
                continue
            outcomes = sorted(set(cell[contract.OUTCOME]) - {"finished"})
            verdicts = sorted(set(cell["verdict"]) - {"unknown"})
            row.append(" / ".join(verdicts + outcomes) or "unknown")
        rows.append((a, o, *row))
    return md_table(["activation", "optimizer", *(f"depth {d}" for d in depths)], rows)


@register("grid", "smoke", "paper")
def grid(s: collect.Sweep, view: View) -> Section:
    c, depth, optimizer, lo, hi, th = s.cells, view.depth, view.optimizer, view.lo, view.hi, view.thresholds
    has_steps, has_act = not s.steps.empty, not s.steps.empty and (s.steps["group"] == "act").any()
    plan = [  # name, title, needs, function
        ("accuracy_heatmap", "Final test accuracy", True, lambda: F.accuracy_heatmap(c)),
        ("accuracy_vs_depth", "Test accuracy against depth", True, lambda: F.accuracy_vs_depth(c)),
        (
            "gradient_profile",
            "Weight-gradient profile across layers",
            has_steps,
            lambda: F.gradient_profile(s.steps, optimizer),
        ),
        ("ratio_vs_depth", "First/last gradient ratio against depth", has_steps, lambda: F.ratio_vs_depth(c, lo, hi)),
        (
            "forward_signal",
            "Forward signal through depth at initialisation",
            not s.signal.empty,
            lambda: F.forward_signal(s.signal, th.collapse_below),
        ),
        (
            "loss_curves",
            "Training-loss curves",
            not s.epochs.empty,
            lambda: F.loss_curves(s.epochs, depth, c.set_index("run_id")["trained"]),
        ),
        ("saturation", "Saturation and dead units", has_act, lambda: F.saturation(s.steps, depth, optimizer)),
        (
            "backprop_histograms",
            "Back-propagated gradient histograms",
            not s.histograms.empty,
            lambda: F.backprop_histograms(s.histograms, depth, optimizer),
        ),
        (
            "gradient_heatmap",
            "Layer × step gradient heatmap",
            has_steps,
            lambda: F.gradient_heatmap(s.steps, depth, optimizer),
        ),
    ]
    caps = captions(s, depth, optimizer, lo, hi)
    figures = [
        Figure(name, title, make if ok else (lambda: None), caps.get(name, "")) for name, title, ok, make in plan
    ]
    notes = [
        f"- figures (c), (e)–(h) show depth {depth} and optimizer `{optimizer}` (`--depth`, `--optimizer` to change)"
    ]
    several = bool((c.groupby(stats.cell_axes(c, collect.extra_axes(c)))["seed"].nunique() > 1).any())
    tables = [contrast_table(c)] if several and c["optimizer"].astype(str).nunique() > 1 else []
    budget = budget_table(c, s.epochs)
    return Section(
        figures, tables=[*([budget] if budget else []), *tables, verdict_table(c), reason_table(c)], notes=notes
    )
