"""Read one sweep from any MLflow store into a `collect.Sweep` of tidy pandas tables.

Per run, the report reads one MLflow search (params, tags, final metrics) plus the run's parquet
artifacts (epochs, diagnostics, histograms), never one metric-history call per run and metric.
An artifact that does not exist is expected (a failed or killed cell, a lower diagnostics level);
one that exists but cannot be used, and a param or metric every cell records but this run lacks
(or holds as a number that is not one), is named in a `warning:` line on stderr and in the cells
table's `unreadable` column, and the rest of the run is reported.
"""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from study import contract, tracking, verdicts
from study.report import artifacts
from study.report.collect import (
    AXES,
    DATASET_CLASSES,
    EMPTY_COLUMNS,
    FINAL,
    INTEGER,
    NUMERIC,
    REQUIRED_METRICS,
    REQUIRED_PARAMS,
    SORT,
    STEP_POINTS,
    TEXT,
    Sweep,
    backfill,
    by_arm,
    judge,
)


def _experiment(c: MlflowClient, name: str):
    exp = c.get_experiment_by_name(name)
    if exp is None:
        names = [e.name for e in c.search_experiments()]
        raise SystemExit(f"no experiment {name!r} in this store; experiments: {', '.join(names) or 'none'}")
    return exp


def find_sweep(c: MlflowClient, experiment: str, sweep_id: str | None):
    exp = _experiment(c, experiment)
    filt = contract.sweeps_query(sweep_id)
    parents = c.search_runs([exp.experiment_id], filt, order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        known = c.search_runs(
            [exp.experiment_id], contract.sweeps_query(), order_by=["attributes.start_time DESC"], max_results=20
        )
        if not known:
            raise SystemExit(f"no sweep in experiment {experiment!r} of this store (run `make sweep` first)")
        ids = ", ".join(
            f"{r.data.tags.get(contract.SWEEP_ID)} ({r.data.tags.get(contract.PRESET, '?')})" for r in known
        )
        raise SystemExit(f"no sweep {sweep_id!r} in experiment {experiment!r}; sweeps here, newest first: {ids}")
    return exp, parents[0]


def _recorded(r, outcome: str) -> dict[str, str]:
    """What a run should have recorded and did not, or recorded unusable: `params:<key>` (a key
    every cell logs before training, or a number that is not one) and, for a cell with results,
    `metrics:<key>`, each with why. A run still running may not have logged its params yet."""
    out = {}
    if r.info.status != "RUNNING":
        out |= {f"params:{k}": "KeyError: not recorded" for k in REQUIRED_PARAMS if k not in r.data.params}
    if outcome in contract.RAN:
        out |= {f"metrics:{k}": "KeyError: not recorded" for k in REQUIRED_METRICS if k not in r.data.metrics}
    for key, short in AXES.items():
        if short in NUMERIC and _not_a_number(r.data.params.get(key), short in INTEGER):
            kind = "an integer" if short in INTEGER else "a number"
            out[f"params:{key}"] = f"ValueError: {r.data.params[key][:60]!r} is not {kind}"
    return out


def _not_a_number(value, integer: bool) -> bool:
    if value is None or str(value).strip().lower() in ("", "none", "null", "nan"):
        return False
    x = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return bool(np.isnan(x) or (integer and (not np.isfinite(x) or x != round(x) or abs(x) > 2**53)))


def _subsample(df: pd.DataFrame) -> pd.DataFrame:
    steps = np.sort(df["step"].unique())
    keep = steps[np.unique(np.linspace(0, len(steps) - 1, min(STEP_POINTS, len(steps))).round().astype(int))]
    return df[df["step"].isin(keep)]


def find_runs(c: MlflowClient, experiment: str, run_ids: list[str] | None):
    """Runs reported without a sweep: the given run ids, or (None) every single run (`role=single`)
    of the experiment."""
    exp = _experiment(c, experiment)
    if run_ids is None:
        runs = c.search_runs([exp.experiment_id], contract.singles_query(), max_results=50000)
        if not runs:
            raise SystemExit(f"no single run (`python -m study.train` without -m) in experiment {experiment!r}")
        return exp, runs
    runs = []
    for rid in run_ids:
        try:
            runs.append(c.get_run(rid))
        except Exception:
            raise SystemExit(f"no run {rid!r} in this store") from None
        if runs[-1].info.experiment_id != exp.experiment_id:
            raise SystemExit(f"run {rid!r} is not in experiment {experiment!r}")
    return exp, runs


def load(
    uri: str,
    experiment: str,
    sweep_id: str | None = None,
    thresholds: verdicts.Thresholds | None = None,
    *,
    run_ids: list[str] | None = None,
    single: bool = False,
) -> Sweep:
    """A sweep's cells (the latest sweep, or `sweep_id`), or runs without a sweep: `run_ids`, or
    with `single` every single run of the experiment."""
    c = tracking.client(uri)
    exp, parent, runs, planned, sid = _find(c, experiment, sweep_id, run_ids, single)
    extra = _extra_axes(planned)
    rows, artifact_uris, problems = _rows(runs, extra)
    cells = _cells(rows, planned, runs, extra, thresholds)
    tables = _read_tables(c, uri, cells, artifact_uris, problems)
    keys = cells[["run_id", *AXES.values(), *extra]]  # every table carries every axis of its cell
    info = _info(uri, experiment, sid, parent, planned, runs, run_ids)
    tidy = {name: _tidy(tables, keys, name, sort) for name, sort in SORT.items()}
    cells = judge(backfill(cells, tidy[contract.EPOCHS], tidy[contract.DIAGNOSTICS]), thresholds)
    cells[contract.INIT_FINDING] = cells[contract.INIT_FINDING].astype(str)
    return Sweep.of(info, cells, tidy)


def _find(c: MlflowClient, experiment: str, sweep_id, run_ids, single):
    """The experiment, the sweep's parent run (None for runs without a sweep), the runs, the planned
    cells (None without a sweep) and the sweep's id (for runs without one: made from the newest run)."""
    if run_ids or single:
        exp, runs = find_runs(c, experiment, run_ids or None)
        parent, planned = None, None
        sid = ("runs-" if run_ids else "single-") + max(runs, key=lambda r: r.info.start_time).info.run_id[:8]
    else:
        exp, parent = find_sweep(c, experiment, sweep_id)
        sid = parent.data.tags[contract.SWEEP_ID]
        runs = c.search_runs([exp.experiment_id], contract.cells_query(sid), max_results=50000)
        runs += c.search_runs([exp.experiment_id], contract.reused_query(sid), max_results=50000)
        planned = _planned(c, parent.info.run_id)
    return exp, parent, runs, planned, sid


def _rows(runs, extra: list[str]) -> tuple[list[dict], dict, dict]:
    """A row per run (its axes, final metrics, outcome), each run's artifact URI, what it lacks."""
    rows, artifact_uris, problems = [], {}, {}
    for r in runs:
        artifact_uris[r.info.run_id] = r.info.artifact_uri
        row = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            contract.OUTCOME: r.data.tags.get(contract.OUTCOME, "unknown"),
            "verdict_at_training": r.data.tags.get(contract.VERDICT, "unknown"),
        }
        if r.info.status == "RUNNING":
            row[contract.OUTCOME] = "running"
        row |= {short: r.data.params.get(key) for key, short in AXES.items()}
        row |= {k: r.data.params.get(k.lstrip("+"), r.data.params.get(f"{k.lstrip('+')}.name")) for k in extra}
        row |= {k: r.data.metrics.get(k, np.nan) for k in FINAL}
        rows.append(row)
        if recorded := _recorded(r, row[contract.OUTCOME]):
            problems[r.info.run_id] = recorded
    return rows, artifact_uris, problems


def _cells(rows: list[dict], planned, runs, extra: list[str], thresholds) -> pd.DataFrame:
    """The cells table: typed columns, planned cells that never ran, arms, verdicts recomputed."""
    cells = pd.DataFrame(
        rows,
        columns=[
            "run_id",
            "run_name",
            "status",
            contract.OUTCOME,
            "verdict_at_training",
            *AXES.values(),
            *extra,
            *FINAL,
        ],
    )
    cells = _add_missing(planned, cells, [r.data.params for r in runs], extra)
    for col in NUMERIC:
        cells[col] = pd.to_numeric(cells[col], errors="coerce")
    for col in INTEGER:  # not an integer (named by _recorded): NaN, as a value not recorded
        x = cells[col]
        cells[col] = x.where(np.isfinite(x) & (x == x.round()) & (x.abs() <= 2**53))
    for col in ("activation", "optimizer"):  # every figure groups by them: `unknown` when not recorded
        cells[col] = cells[col].fillna("unknown")
    cells["num_classes"] = cells["num_classes"].fillna(cells["dataset"].map(DATASET_CLASSES))
    cells = by_arm(cells)
    cells = judge(cells, thresholds)
    for col in INTEGER:
        cells[col] = cells[col].astype("Int64")
    for col in TEXT:
        cells[col] = cells[col].astype(str)
    cells = cells.sort_values(["activation", "optimizer", "depth", "seed", "run_name"], kind="stable").reset_index(
        drop=True
    )
    return cells


def _read_tables(c: MlflowClient, uri: str, cells: pd.DataFrame, artifact_uris: dict, problems: dict) -> dict:
    """Every run's table artifacts (read 8 at a time), by table; the per-step table subsampled. What
    cannot be read is named in a warning and in the cells' `unreadable` column."""
    tables = {t: [] for t in contract.TABLES}
    ids = [rid for rid in cells["run_id"] if isinstance(rid, str)]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(8) as pool:
        read = list(pool.map(lambda rid: artifacts.run_tables(c, uri, rid, artifact_uris[rid], tmp), ids))
    for rid, (run_tables, unreadable) in zip(ids, read):
        if unreadable:
            problems[rid] = {**unreadable, **problems.get(rid, {})}
        for name, df in run_tables.items():
            if len(df):
                df = _subsample(df) if name == contract.DIAGNOSTICS else df
                tables[name].append(df.assign(run_id=rid))
    cells["unreadable"] = cells["run_id"].map(lambda rid: ",".join(problems.get(rid, ())))
    artifacts.warn(cells, problems)
    return tables


def _tidy(tables: dict, keys: pd.DataFrame, name: str, sort: list[str]) -> pd.DataFrame:
    """One table over every run: each row with its cell's axes, sorted; empty with its columns."""
    if not tables[name]:  # no run wrote this artifact: an empty table with its columns
        empty = pd.DataFrame(columns=[*keys.columns, *sort, *EMPTY_COLUMNS[name]])
        numeric = [c for c in ("value", "count", "epoch", "step", "layer_index", "bin_left", "bin_right") if c in empty]
        return empty.astype(dict.fromkeys(numeric, float))
    df = pd.concat(tables[name], ignore_index=True).merge(keys, on="run_id")
    axes = [
        "activation",
        "optimizer",
        "depth",
        "seed",
        "init",
        "width",
        "lr",
        "batch_size",
        "schedule",
        "regularization",
        "mitigation",
    ]
    return df.sort_values([*axes, *sort], kind="stable").reset_index(drop=True)


def _info(uri: str, experiment: str, sid: str, parent, planned, runs, run_ids) -> dict:
    """The report's metadata: the sweep's parent run (tags, metrics, times) or, for runs without a
    sweep, the newest run's environment and the runs' time span."""
    if parent is not None:
        info = {
            contract.SWEEP_ID: sid,
            "experiment": experiment,
            "parent_run_id": parent.info.run_id,
            "tracking_uri": tracking.shown_uri(uri),
            "start_time": parent.info.start_time,
            "end_time": parent.info.end_time,
            "parent_status": parent.info.status,
            "planned": planned,
            **parent.data.tags,
            **{k: v for k, v in parent.data.metrics.items()},
        }
    else:  # runs without a sweep: the newest run's environment, the runs' time span
        info = {
            **{
                k: v
                for k, v in max(runs, key=lambda r: r.info.start_time).data.tags.items()
                if not k.startswith("mlflow.")
            },
            contract.SWEEP_ID: sid,
            contract.PRESET: "runs" if run_ids else "single",
            "experiment": experiment,
            "parent_run_id": None,
            "run_ids": [r.info.run_id for r in runs],
            "tracking_uri": tracking.shown_uri(uri),
            "start_time": min(r.info.start_time for r in runs),
            "end_time": max((r.info.end_time or 0) for r in runs) or None,
        }
    return info


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _planned(c: MlflowClient, parent_id: str) -> list[dict] | None:
    """The planned cells (grid.json of the parent run) as {override key: value}; None without it."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            grid = json.loads(Path(c.download_artifacts(parent_id, contract.GRID_ARTIFACT, tmp)).read_text())
    except Exception:
        return None
    return [dict(o.split("=", 1) for o in overrides) for overrides in grid]


def _swept(planned: list[dict]) -> list[str]:
    return sorted({k for cell in planned for k in cell if len({p.get(k) for p in planned}) > 1})


def _extra_axes(planned: list[dict] | None) -> list[str]:
    """Swept keys of the planned grid that AXES does not name (a new preset's axis): each becomes a
    column of every table, named by its key."""
    known = {k.removesuffix(".name").removesuffix(".kind") for k in AXES}
    return [k for k in _swept(planned or []) if k.removeprefix("+") not in known]


def _add_missing(planned: list[dict] | None, cells: pd.DataFrame, params: list[dict], extra: list[str]) -> pd.DataFrame:
    """Rows with outcome `missing` for planned cells that no run matches on the swept keys (a group
    key `g` is matched through the param `g.name`, or `g.kind` for the model group)."""
    if planned is None:
        return cells
    swept = _swept(planned)

    def value(p: dict, key: str):
        return p.get(key, p.get(f"{key}.name", p.get(f"{key}.kind")))

    missing = []
    for cell in planned:
        if not any(all(_same(value(p, k), cell[k]) for k in swept) for p in params):
            row = {
                short: cell.get(key, cell.get(key.rsplit(".", 1)[0]) if key.endswith((".name", ".kind")) else None)
                for key, short in AXES.items()
            }
            row |= {key: cell.get(key) for key in extra}
            row["seed"] = row["seed"] or "0"
            missing.append(
                row
                | {
                    contract.OUTCOME: "missing",
                    "status": "MISSING",
                    "verdict_at_training": "unknown",
                    "run_name": ",".join(f"{k}={cell[k]}" for k in swept),
                }
            )
    return pd.concat([cells, pd.DataFrame(missing)], ignore_index=True) if missing else cells
