"""Report sections of the paper reproductions `glorot_bengio_2010` and `he_2015`: their figures, and
a table that sets each published claim beside the criterion fixed before running (in this module)
and what the seeds measured, saying plainly which claims are reproduced.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study import contract, verdicts
from study.meanfield import inverse_width_sum
from study.report import charts, collect, stats
from study.report.md import md_table
from study.report.sections.registry import Figure, criteria, register
from study.report.sections.second_order import sharpness_over_training

SATURATED_BELOW = 0.1  # sigmoid's top hidden layer "saturates at 0": mean activation below this at the end
STALLS_ABOVE = 0.9  # a run "stalls" when its last training loss is above this fraction of its first


def _done(c: pd.DataFrame) -> pd.DataFrame:
    return c[c[contract.OUTCOME].isin(contract.RAN)]


def _claims(rows: list[tuple[str, str, str, bool | None]], claim: str = "published claim") -> str:
    header = [claim, "criterion (fixed before running)", "measured", "reproduced"]
    said = lambda ok: "n/a" if ok is None else "yes" if ok else "no"  # noqa: E731
    return md_table(header, [(claim, criterion, measured, said(ok)) for claim, criterion, measured, ok in rows])


def _interval(runs: pd.DataFrame) -> str:
    """One cell's test accuracy by stats.py's rules: mean and t interval where its seeds agree,
    `k/n trained` and the trained seeds' mean where they split."""
    return stats.fmt(stats.summary(runs).iloc[0]) if len(runs) else "n/a"


def _trained(c: pd.DataFrame) -> pd.Series | None:
    """run_id → whether the seed trained (collect.judge), for curves that draw the two apart."""
    return c.set_index("run_id")["trained"] if "trained" in c else None


def _top_layer_means(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run: the top hidden layer's mean activation at its first and last logged step."""
    a = steps[(steps["group"] == "act") & (steps["stat"] == "mean")]
    if a.empty:
        return pd.DataFrame(columns=["run_id", "activation", "init", "first", "last"])
    top = a[a["layer_index"] == a.groupby("run_id")["layer_index"].transform("max")].sort_values("step")
    g = top.groupby("run_id")
    return pd.DataFrame(
        {
            "activation": g["activation"].first(),
            "init": g["init"].first(),
            "first": g["value"].first(),
            "last": g["value"].last(),
        }
    ).reset_index()


@register("glorot_bengio_2010")
def glorot_bengio_2010(s, view):
    c = _done(s.cells)
    top = _top_layer_means(s.steps)
    sat = [
        f"{a}/{i} {g['first'].mean():.2f} → {g['last'].mean():.2f} (seeds {', '.join(f'{v:.2f}' for v in g['last'])})"
        for (a, i), g in top.groupby(["activation", "init"])
    ]
    sig = top[(top["activation"] == "sigmoid") & (top["init"] == "standard_uniform")]["last"]
    means = collect.backprop_layer_means(s.histograms, ["activation", "init"])
    spread = {k: float(m.iloc[-1] - m.iloc[0]) for k, m in means.items()}  # decades, top minus bottom layer
    std, norm = spread.get(("tanh", "standard_uniform")), spread.get(("tanh", "glorot_uniform"))
    pairs = {  # normalized and standard init of one activation: each seed's two nets share its draw
        a: (stats.where(c, activation=a, init="glorot_uniform"), stats.where(c, activation=a, init="standard_uniform"))
        for a in ("tanh", "softsign")
    }
    # normalized minus standard init, paired by seed (stats.py rule 3)
    table1 = {a: stats.paired(norm_, std_) for a, (norm_, std_) in pairs.items() if len(norm_) and len(std_)}
    resolved = all(p.resolved and p.mean > 0 for p in table1.values()) if table1 else None
    claims = _claims(
        [
            (
                "Fig. 2: the top hidden layer of a sigmoid network (standard init) saturates at 0 early in training",
                f"its mean activation below {SATURATED_BELOW} at the end, every seed",
                ", ".join(f"{v:.3f}" for v in sig) or "no sigmoid run",
                bool(len(sig)) and bool((sig < SATURATED_BELOW).all()),
            ),
            (
                "Fig. 7: with standard init back-propagated gradients shrink towards the input; "
                "normalized init keeps them alike",
                "tanh at initialisation: the mean log10 magnitude of dL/dh falls more from the top to the first "
                "hidden layer with standard init than with normalized",
                f"standard {std:.2f} decades, normalized {norm:.2f}" if std is not None and norm is not None else "n/a",
                None if std is None or norm is None else std > norm,
            ),
            (
                "Table 1: normalized init lowers the test error of tanh and softsign",
                "test accuracy, normalized minus standard init paired by seed (each seed's two nets share its "
                "draw): above zero with p < 0.05 for each activation (stats.py rule 3: paired t, or the sign "
                "test where seeds split)",
                "; ".join(f"{a}: {p.text()}" for a, p in table1.items()) or "n/a",
                resolved,
            ),
        ]
    )
    acc = [f"{a}/{i} {_interval(g)}" for (a, i), g in c.groupby(["activation", "init"])]
    return [
        Figure(
            "activations_over_training",
            "Activation mean and spread per layer (their Fig. 2)",
            lambda: charts.activation_over_training(s.steps, "init"),
            claims
            + "\n\nMean activation of the top hidden layer, first → last logged step (mean over seeds): "
            + "; ".join(sat)
            + ".",
        ),
        Figure(
            "backprop_by_init",
            "Back-propagated gradients per layer (their Fig. 7)",
            lambda: charts.backprop_by(s.histograms, "init", 0),
            "Mean log10 |dL/dh| at initialisation (seeds pooled): "
            + "; ".join(
                f"{a}/{v} {m.iloc[0]:.2f} (layer 1) to {m.iloc[-1]:.2f} (layer {m.index[-1]})"
                for (a, v), m in means.items()
            )
            + ".",
        ),
        Figure(
            "glorot_accuracy",
            "Test accuracy",
            lambda: charts.axis_heatmap(c, "init"),
            "Test accuracy per activation/init (stats.py rules: mean and 95 % t interval where the seeds agree, "
            "k/n trained where they split): " + "; ".join(acc) + ".",
        ),
    ]


def _losses(e: pd.DataFrame) -> pd.DataFrame:
    first = e[(e["metric"] == "train/loss") & (e["epoch"] == 0)].set_index("run_id")["value"]
    last = collect.final_epoch(e, "train/loss").set_index("run_id")["value"]
    return pd.DataFrame({"first": first, "last": last})


HE_DEFAULTS = {"stalls_above": STALLS_ABOVE}


def he_table(c: pd.DataFrame, curv: pd.DataFrame, stalls_above: float) -> pd.DataFrame:
    """Per depth and init: seeds that train (last training loss <= stalls_above × first), the mean
    first and last training loss, `died` verdicts, the medians of the gradient-norm growth and the
    deadest layer's dead fraction at the end, and the largest λ_max measured in any seed over the
    stability limit of the step (`curv/two_over_lr`: (2 + 2β)/η for momentum β)."""
    rows = []
    for (depth, init), g in c.groupby(["depth", "init"]):
        trains = np.isfinite(g["last"]) & (g["last"] <= stalls_above * g["first"])
        lam = curv[curv["run_id"].isin(g["run_id"])] if len(curv) else curv
        peak = lam[lam["stat"] == "lambda_max"]["value"].max() if len(lam) else np.nan
        limit = lam[lam["stat"] == "two_over_lr"]["value"].median() if len(lam) else np.nan
        rows.append(
            {
                "depth": int(depth),
                "init": init,
                "runs": len(g),
                "train": int(trains.sum()),
                "first": float(g["first"].mean()),
                "last": float(g["last"].mean()),
                "died": int((g["verdict"] == "died").sum()),
                "grad_growth": float(g[verdicts.GROWTH].median()),
                "dead_frac_final": float(g[verdicts.DEAD_FINAL].median()),
                "lambda_max_peak": float(peak),
                "stability_limit": float(limit),
                "test": _interval(g),
            }
        )
    return pd.DataFrame(rows)


@register("he_2015")
def he_2015(s, view):
    rules, said = criteria(s.info, HE_DEFAULTS)
    stalls = float(rules["stalls_above"])
    c, e = _done(s.cells), s.epochs
    c = c.join(_losses(e), on="run_id")
    t = he_table(c, s.curvature, stalls) if len(c) else pd.DataFrame()
    rows = []
    for depth, g in t.groupby("depth") if len(t) else []:
        he, xa = g[g["init"] == "he_normal"], g[g["init"] != "he_normal"]
        if len(he) and len(xa):
            he, xa = he.iloc[0], xa.iloc[0]
            rows.append(
                (
                    f'Fig. 3: a deep plain ReLU net ({depth} conv layers) stalls with "Xavier", trains with theirs',
                    f"{xa['init']} stalls in every seed, he_normal trains in every seed "
                    f"(a seed trains when its last training loss ≤ {stalls:g} × its first)",
                    f"train: {xa['init']} {xa['train']}/{xa['runs']}, he_normal {he['train']}/{he['runs']}",
                    bool(xa["train"] == 0 and he["train"] == he["runs"]),
                )
            )
    header = [
        "depth",
        "init",
        "seeds that train",
        "training loss, first → last (mean)",
        "`died`",
        "gradient-norm growth (median)",
        "deadest layer's dead fraction at the end (median)",
        "largest λ_max / stability limit",
        "test accuracy",
    ]
    table = md_table(
        header,
        [
            (
                r.depth,
                r.init,
                f"{r.train}/{r.runs}",
                f"{r.first:.3f} → {r.last:.3f}",
                f"{r.died}/{r.runs}",
                f"{r.grad_growth:.3g}",
                f"{r.dead_frac_final:.2f}",
                f"{r.lambda_max_peak:.3g} / {r.stability_limit:.3g}" if np.isfinite(r.lambda_max_peak) else "n/a",
                r.test,
            )
            for r in t.itertuples()
        ],
    )
    metrics = [("train/loss", "training loss"), ("val/accuracy", "validation accuracy")]
    figures = [
        Figure(
            "he_curves",
            "Training curves by initialisation (their Fig. 3), a line per seed",
            lambda: charts.curves_vs(e, "init", "depth", metrics, trained=_trained(s.cells)),
            (_claims(rows) + "\n\n" if rows else "")
            + (table + "\n\n" if len(t) else "")
            + f"Rules from {said}. Gradient-norm growth: the largest global weight-gradient norm over its "
            "step-0 value (`diag/grad_growth`); dead fraction: the signal probe's at the end; λ_max: the top "
            "Hessian eigenvalue of the training loss (`curv/lambda_max`, on "
            "`diagnostics.curvature.examples` examples), against the step's stability limit "
            "(`curv/two_over_lr`, (2 + 2β)/η for momentum β). Test accuracy by the report's interval rules "
            "(k/n where seeds split).",
        ),
        Figure(
            "he_ratio",
            "Gradient ratio by initialisation",
            lambda: charts.ratio_by(c, "init", view.lo, view.hi),
            "Verdicts: "
            + "; ".join(
                f"{i}: " + ", ".join(f"{k} {v}" for k, v in g["verdict"].value_counts().sort_index().items())
                for i, g in c.groupby("init")
            )
            + ".",
        ),
    ]
    if len(s.curvature) and (s.curvature["stat"] == "lambda_max").any():
        figures.append(
            Figure(
                "he_sharpness",
                "Sharpness λ_max of the training loss by initialisation (mean over seeds; thin: each seed), "
                "with the stability limit",
                lambda: sharpness_over_training(s.curvature, "init", None, True, "(2 + 2β)/η", per_run=True),
                "The dashed line is the step's stability limit (`curv/two_over_lr`: (2 + 2β)/η for momentum). "
                f"Measured every {_every(s.curvature)} steps: a spike between two measurements is not seen.",
            )
        )
    return figures


def _every(curv: pd.DataFrame) -> str:
    """The spacing of the λ_max measurements (the most common gap between measured steps)."""
    steps = curv[curv["stat"] == "lambda_max"].groupby("run_id")["step"].apply(lambda v: np.diff(np.sort(v.to_numpy())))
    gaps = np.concatenate(steps.to_list()) if len(steps) else np.array([])
    return f"{int(pd.Series(gaps).mode().iloc[0])}" if len(gaps) else "n/a"


WIDTH_DEFAULTS = {"stalls_above": STALLS_ABOVE}


def width_table(c: pd.DataFrame, stalls_above: float) -> pd.DataFrame:
    """Per width: Σ 1/n_l, seeds that train (last training loss <= stalls_above × first), seeds whose
    verdict is `died`, and the medians of the gradient-norm growth, the deadest layer's dead
    fraction at the end and the update ratio of the last epoch."""
    rows = []
    for width, g in c.groupby("width"):
        depth = int(g["depth"].iloc[0])
        trains = np.isfinite(g["last"]) & (g["last"] <= stalls_above * g["first"])
        rows.append(
            {
                "width": int(width),
                "depth": depth,
                "inverse_width_sum": inverse_width_sum(depth, int(width)),
                "runs": len(g),
                "train": int(trains.sum()),
                "died": int((g["verdict"] == "died").sum()),
                "grad_growth": float(g[verdicts.GROWTH].median()),
                "dead_frac_final": float(g[verdicts.DEAD_FINAL].median()),
                "update_ratio_final": float(g[verdicts.UPDATE_RATIO].median()),
                "test": _interval(g),
            }
        )
    return pd.DataFrame(rows).sort_values("width").reset_index(drop=True)


@register("he_2015_width")
def he_2015_width(s, view):
    rules, said = criteria(s.info, WIDTH_DEFAULTS)
    c, e = _done(s.cells), s.epochs
    c = c.join(_losses(e), on="run_id")
    t = width_table(c, float(rules["stalls_above"])) if len(c) else pd.DataFrame()
    rows = []
    if len(t):
        widest = t.iloc[-1]
        monotone = bool((np.diff(t["train"].to_numpy()) >= 0).all())
        rows.append(
            (
                "wider He-initialised plain ReLU nets stop dying in training (finite-width fluctuations grow "
                "with Σ 1/n_l; Hanin & Rolnick 2018)",
                f"every seed at the widest width ({widest['width']}) trains (last training loss ≤ "
                f"{rules['stalls_above']:g} × first), and the number that train never falls as the width grows",
                ", ".join(f"width {r.width}: {r.train}/{r.runs} train, {r.died} died" for r in t.itertuples()),
                bool(widest["train"] == widest["runs"] and monotone),
            )
        )
    header = [
        "width",
        "Σ 1/n_l",
        "seeds that train",
        "`died`",
        "gradient-norm growth (median)",
        "deadest layer's dead fraction at the end (median)",
        "update / weight, last epoch (median)",
        "test accuracy",
    ]
    table = md_table(
        header,
        [
            (
                r.width,
                f"{r.inverse_width_sum:.2f}",
                f"{r.train}/{r.runs}",
                f"{r.died}/{r.runs}",
                f"{r.grad_growth:.3g}",
                f"{r.dead_frac_final:.2f}",
                f"{r.update_ratio_final:.2g}",
                r.test,
            )
            for r in t.itertuples()
        ],
    )
    metrics = [("train/loss", "training loss"), ("val/accuracy", "validation accuracy")]
    return [
        Figure(
            "he_width_curves",
            "Training curves of He-initialised 30-layer plain ReLU nets, a panel per width, a line per seed",
            lambda: charts.curves_vs(e, "seed", "width", metrics, trained=_trained(s.cells)),
            (_claims(rows, "prediction") + "\n\n" if rows else "")
            + (table + "\n\n" if len(t) else "")
            + f"Rules from {said}. Σ 1/n_l over the conv layers' channels (study.meanfield.inverse_width_sum); "
            "gradient-norm growth: the largest global weight-gradient norm over its step-0 value "
            "(`diag/grad_growth`); dead fraction: the signal probe's at the end.",
        ),
    ]
