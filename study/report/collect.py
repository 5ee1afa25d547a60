"""The tidy tables of a sweep, as the figures and REPORT.md use them: the `Sweep` (cells, epochs,
steps, histograms, signal, curvature), the cells table's columns, the verdicts recomputed from each
cell's evidence, and a report folder read back (`from_folder`: no store needed). Reading a sweep from
an MLflow store is `study.report.from_store.load`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from study import contract, verdicts
from study.errors import ConfigError

AXES = {
    "model.activation": "activation",
    "optimizer.name": "optimizer",
    "model.depth": "depth",
    "seed": "seed",
    "optimizer.learning_rate": "learning_rate",
    "train.batch_size": "batch_size",
    "model.init": "init",
    "schedule.name": "schedule",
    "diagnostics.level": "diagnostics",
    contract.NUM_CLASSES: "num_classes",
    "data.name": "dataset",
    "optimizer.lr_scale": "lr_scale",
    contract.LEARNING_RATE_EFFECTIVE: "lr",
    "model.width": "width",
    "model.kind": "model",
    "regularization": "regularization",
    "mitigation": "mitigation",
    contract.STEPS_PER_EPOCH: "steps_per_epoch",
    "experiment_name": contract.PRESET,
    "train.loss": "loss_fn",
    "model.init_scale": "init_scale",
    "arm": "arm",
}
FINAL = (
    "test/accuracy",
    "test/loss",
    "val/accuracy",
    "val/loss",
    "train/accuracy",
    "train/loss",
    "eval_train/accuracy",
    "eval_train/loss",
    "time/wall_s",
    "time/epoch_s",
    verdicts.FIRST_NONFINITE,
    verdicts.GRAD_NOISE,
    "train/diverged_at_step",
    *(k for k in verdicts.EVIDENCE if k not in (verdicts.NONFINITE,)),
    verdicts.NONFINITE,
)
NUMERIC = ("depth", "seed", "width", "lr_scale", "lr", "steps_per_epoch", "num_classes", "init_scale")
INTEGER = ("depth", "seed", "width", "steps_per_epoch")
# each table of the report: its sort keys after the cell's axes, in the order they are tidied
SORT = {
    contract.EPOCHS: ["metric", "epoch"],
    contract.DIAGNOSTICS: ["group", "layer_index", "stat", "step"],
    contract.HISTOGRAMS: ["epoch", "quantity", "layer_index", "bin_left"],
    contract.SIGNAL: ["phase", "layer_index", "stat"],
    contract.CURVATURE: ["stat", "step"],
}
# the value columns an empty table still has (no run wrote that artifact)
EMPTY_COLUMNS = {
    contract.EPOCHS: ["layer", "value"],
    contract.DIAGNOSTICS: ["epoch", "layer", "value"],
    contract.HISTOGRAMS: ["layer", "bin_right", "count"],
    contract.SIGNAL: ["layer", "value"],
    contract.CURVATURE: ["value"],
}
# every cell logs these before it trains, and a cell with results these: a run without one is
# named in a warning and in the cells table's `unreadable` column (its value NaN)
REQUIRED_PARAMS = ("model.activation", "optimizer.name", "model.depth", "seed")
REQUIRED_METRICS = ("test/accuracy",)
TEXT = (  # columns of the cells table that are always text ("nan" where not recorded)
    "activation",
    "optimizer",
    contract.OUTCOME,
    "verdict",
    "verdict_at_training",
    contract.INIT_FINDING,
    "status",
    "batch_size",
    "init",
    "schedule",
    "regularization",
    "mitigation",
)
META = "meta.json"  # in a report's tables/: the sweep's metadata, so that the folder alone rebuilds it
DATASET_CLASSES = {"fashion_mnist": 10, "digits": 10}  # runs recorded before `data.num_classes` was a param
STEP_POINTS = 60  # step-level diagnostics kept per run in the tidy table (evenly spaced steps)


@dataclass
class Sweep:
    """Everything the figures and REPORT.md need; every table sorted for determinism."""

    info: dict
    cells: pd.DataFrame
    epochs: pd.DataFrame
    steps: pd.DataFrame
    histograms: pd.DataFrame
    signal: pd.DataFrame = field(default_factory=pd.DataFrame)
    curvature: pd.DataFrame = field(default_factory=pd.DataFrame)  # step, stat, value (curv/*), when recorded
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, info: dict, cells: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> Sweep:
        """A Sweep from its tables by contract name (contract.TABLES; an absent one is empty)."""
        return cls(info, cells, **{contract.REPORT_TABLES[t]: tables.get(t, pd.DataFrame()) for t in contract.TABLES})

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by contract name (contract.TABLES); the report names each REPORT_TABLES[name]."""
        return {t: getattr(self, contract.REPORT_TABLES[t]) for t in contract.TABLES}


def final_epoch(epochs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of `metric` at each run's last logged epoch."""
    e = epochs[epochs["metric"] == metric]
    return e[e["epoch"] == e.groupby("run_id")["epoch"].transform("max")]


def backprop_layer_means(hist: pd.DataFrame, by: str | list[str]) -> dict:
    """Mean log10 |dL/dh| per layer at initialisation (epoch 0), from the binned histograms: one
    Series (layer_index -> count-weighted mean of bin midpoints) per group of `by`."""
    if hist.empty:
        return {}
    h = hist[(hist["quantity"] == "backprop") & (hist["epoch"] == 0) & np.isfinite(hist["bin_left"])]
    out = {}
    for key, sub in h.groupby(by):
        mids = (sub["bin_left"] + sub["bin_right"]) / 2
        out[key] = (mids * sub["count"]).groupby(sub["layer_index"]).sum() / sub.groupby("layer_index")["count"].sum()
    return out


def by_arm(cells: pd.DataFrame) -> pd.DataFrame:
    """A sweep over arms (an activation with its initialisation, conf/arm/): every figure and table
    groups by the arm, so `activation` holds the arm's name (relu_he and relu_glorot apart) and
    `activation_fn` the activation itself."""
    arms = cells["arm"].where(cells["arm"].notna() & (cells["arm"].astype(str) != "none"))
    if arms.isna().all():
        return cells
    return cells.assign(activation_fn=cells["activation"], activation=arms.fillna(cells["activation"]))


def judge(cells: pd.DataFrame, thresholds: verdicts.Thresholds | None = None) -> pd.DataFrame:
    """The verdict, its reason and the initial finding recomputed from each run's recorded evidence
    (study/verdicts.py), and whether it trained (progress P >= progress_min); `verdict_at_training`
    keeps what the rules said when the cell trained. Cells that did not run (failed, running,
    missing) or ran without diagnostics keep `unknown`."""
    th = thresholds or verdicts.Thresholds()
    labels, reasons, init, trained = [], [], [], []
    for row in cells.to_dict("records"):
        ran = row[contract.OUTCOME] in contract.RAN
        diagnosed = ran and str(row.get("diagnostics")) not in ("off", "None", "nan")
        label, reason = verdicts.decide(row, th) if diagnosed else ("unknown", f"cell {row[contract.OUTCOME]}")
        labels.append(label)
        reasons.append(reason)
        init.append(verdicts.init_finding(row, th) if diagnosed else "unknown")
        p = verdicts.learned(row) if ran else float("nan")
        trained.append(bool(p >= th.progress_min) if np.isfinite(p) else pd.NA)
    return cells.assign(
        verdict=labels,
        verdict_reason=reasons,
        **{contract.INIT_FINDING: init},
        trained=pd.array(trained, dtype="boolean"),
    )


def backfill(cells: pd.DataFrame, epochs: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Evidence that runs recorded before it existed get from the report's own tables: the best
    epoch's progress (`diag/progress_peak`, from the epoch metrics) and the step of the global
    gradient norm's peak (`diag/grad_peak_step`, from the subsampled step table, flagged in
    `diag/grad_peak_step_sampled`: the sampled peak can lie tens of steps from the true one)."""
    cells = cells.copy()
    for key in (verdicts.PROGRESS_PEAK, verdicts.GROWTH_STEP):
        if key not in cells:
            cells[key] = np.nan
    lacking = cells[verdicts.PROGRESS_PEAK].isna()
    if lacking.any() and not epochs.empty:
        by_run = {
            rid: e.pivot_table(index="epoch", columns="metric", values="value") for rid, e in epochs.groupby("run_id")
        }
        for i in cells.index[lacking]:
            e = by_run.get(cells.at[i, "run_id"])
            if e is None:
                continue
            row = cells.loc[i]
            chance = pd.to_numeric(row.get(verdicts.CHANCE_ACCURACY), errors="coerce")
            cells.at[i, verdicts.PROGRESS_PEAK] = verdicts.peak_progress(
                e.to_dict("records"), row["num_classes"], row.get("loss_fn"), chance if np.isfinite(chance) else None
            )
    lacking = cells[verdicts.GROWTH_STEP].isna()
    flagged = pd.to_numeric(cells.get(verdicts.GROWTH_STEP_SAMPLED, np.nan), errors="coerce")
    # a folder's own flag stands (its steps were backfilled when it was written); else flag what is filled now
    cells[verdicts.GROWTH_STEP_SAMPLED] = np.where(np.isfinite(flagged), flagged, lacking.astype(float))
    if lacking.any() and not steps.empty:
        norm = steps[(steps["group"] == "global") & (steps["stat"] == "global_norm") & np.isfinite(steps["value"])]
        peak = norm.loc[norm.groupby("run_id")["value"].idxmax(), ["run_id", "step"]].set_index("run_id")["step"]
        cells.loc[lacking, verdicts.GROWTH_STEP] = cells.loc[lacking, "run_id"].map(peak)
    return cells


def column(key: str) -> str:
    """The cells table's column of a swept override key: AXES's name for it (a config group `g` is
    its param `g.name`, or `g.kind` for the model group), else the key itself (a preset's own axis)."""
    key = key.removeprefix("+")
    return AXES.get(key) or AXES.get(f"{key}.name") or AXES.get(f"{key}.kind") or key


def from_folder(folder: str | Path, thresholds: verdicts.Thresholds | None = None) -> Sweep:
    """A report folder's own tables as the Sweep its report was built from (no store needed), with
    the verdicts recomputed under `thresholds`: written back, its tables are the same files."""
    t = Path(folder) / "tables"
    if not (t / META).is_file() or not (t / "cells.csv").is_file():
        raise ConfigError(
            f"--from {folder}: no tables/{META} and tables/cells.csv there: not a report folder "
            "(reports/<preset>-<sweep id>/), or one made before reports carried their metadata"
        )
    try:
        info = json.loads((t / META).read_text())
        cells = pd.read_csv(t / "cells.csv", low_memory=False)
        files = {name: t / contract.parquet(contract.REPORT_TABLES[name]) for name in contract.TABLES}
        read = {name: pd.read_parquet(f) for name, f in files.items() if f.is_file()}
    except (OSError, ValueError) as err:
        raise ConfigError(f"--from {folder}: its tables cannot be read ({type(err).__name__}: {err})") from None
    present = lambda cols: [col for col in cols if col in cells]  # noqa: E731 (older folders lack some)
    for col in present(NUMERIC):
        cells[col] = pd.to_numeric(cells[col], errors="coerce")
    cells = judge(
        backfill(cells, read.get(contract.EPOCHS, pd.DataFrame()), read.get(contract.DIAGNOSTICS, pd.DataFrame())),
        thresholds,
    )
    for col in present(INTEGER):
        cells[col] = cells[col].astype("Int64")
    for col in present(TEXT):
        cells[col] = cells[col].astype(str)
    if "unreadable" in cells:
        cells["unreadable"] = cells["unreadable"].fillna("").astype(str)
    return Sweep.of(info, cells, read)


def extra_axes(cells: pd.DataFrame) -> tuple[str, ...]:
    """A preset's own swept keys, columns named by their override key (see from_store._extra_axes)."""
    return tuple(c for c in cells.columns if "." in c)
