"""The Hydra side of a sweep: `MlflowSweepCallback` checks every cell's config, creates the store,
the experiment and one MLflow parent run before any job starts, and closes it with a summary; the
sweep file hands the parent run to the jobs.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from study import contract, tracking
from study.config import plan
from study.errors import ConfigError
from study.launch_order import estimated_cost, order_cells

SWEEP_FILE = ".mlflow_sweep.json"  # in the sweep dir: parent run id, sweep id, number of cells


def read_sweep_file(sweep_dir: str | Path) -> dict | None:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def grid_cells(config) -> list[list[str]] | None:
    """The override list of every cell of a basic-sweeper multirun, as written (None for other
    sweepers); our default sweeper is the basic one launching these cells in another order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    if not str(config.hydra.sweeper.get("_target_", "")).endswith(("BasicSweeper", "CostOrderedSweeper")):
        return None
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    overrides = OverridesParser.create().parse_overrides(params + task)
    return BasicSweeper.split_arguments(overrides, None)[0]


def check_names(cells: list[list[str]], names: list[str], template) -> None:
    """Every planned cell gets its own run name, or the sweep is refused before anything trains:
    two runs of one name cannot be told apart in the MLflow UI or the report's tables. The error
    names the swept key(s) that tell the two cells apart and that the name does not show."""
    seen = {}
    for overrides, name in zip(cells, names):
        if name not in seen:
            seen[name] = overrides
            continue
        a, b = (dict(o.lstrip("+~").split("=", 1) for o in c if "=" in o) for c in (seen[name], overrides))
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        key = next((k for k in differ if "." in k), None)
        hint = f" e.g. tracking.run_name='{template}-{key.split('.')[-1]}${{{key}}}'" if key and template else ""
        raise ConfigError(
            f"two cells of this sweep would both be named {name!r} ({', '.join(differ)}: "
            f"{', '.join(f'{a.get(k)} and {b.get(k)}' for k in differ)}): tracking.run_name "
            f"{template!r} does not show {', '.join(differ)}; add it to the name,{hint}"
        )


def stopped(config) -> None:
    """The sweep's process was asked to stop (Ctrl-C, SIGTERM, SIGHUP) outside a cell of its own, e.g.
    while joblib workers trained (they are terminated without a word): every run of the sweep still
    RUNNING, cells and parent, ends KILLED with `outcome=killed`; one line; exit 128 + the signal."""
    from study import stops

    info = read_sweep_file(config.hydra.sweep.dir) or {}
    closed = 0
    if info.get(contract.SWEEP_ID):
        with contextlib.suppress(Exception):  # the store may be what is gone: the next run closes them
            c = tracking.client(config.tracking.uri)
            for r in c.search_runs([info["experiment_id"]], contract.running_query(info[contract.SWEEP_ID])):
                tracking.end_killed(c, r.info.run_id)
                closed += 1
    print(
        f"interrupted ({stops.name()}): sweep {info.get(contract.SWEEP_ID, '?')} stopped, {closed} run(s) ended KILLED",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(stops.exit_code()) from None


def _criteria(config) -> str:
    """The preset's `criteria` block as JSON: its decision rules, recorded before any cell runs."""
    return json.dumps(OmegaConf.to_container(config.criteria, resolve=True), sort_keys=True)


class MlflowSweepCallback(Callback):
    """Hydra callback: before any job, checks every cell's config, creates the store, the
    experiment and the sweep's parent run; at the end, closes the parent run with a summary."""

    def on_multirun_start(self, config, **kwargs) -> None:
        # Hydra turns a callback's exception into a warning and goes on: stop the sweep instead.
        try:
            self._start(config)
        except Exception as err:
            print(f"error: {tracking.redact(str(err))}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    def _start(self, config) -> None:
        from hydra.core.global_hydra import GlobalHydra

        order = str(config.hydra.sweeper.get("order", "cost"))
        order_cells([], order)  # a bad order fails before the parent run
        cells = grid_cells(config)
        if cells is not None:
            loader = GlobalHydra.instance().config_loader()
            names = []
            for overrides in cells:  # every cell, before the parent run: its values, then against its data
                cell = loader.load_sweep_config(master_config=config, sweep_overrides=list(overrides))
                names.append(plan(cell).tracking.run_name)
            check_names(cells, names, OmegaConf.to_container(config.tracking, resolve=False).get("run_name"))
        t = config.tracking
        tracking.check_store(t.uri, None)
        c = tracking.client(t.uri)
        exp_id = tracking.ensure_experiment(c, t.experiment, tracking.artifact_location(t.uri, t.artifact_location))
        tracking.check_store(t.uri, c.get_experiment(exp_id).artifact_location)
        tracking.close_stale(c, exp_id)
        sweep_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        name = config.get("experiment_name") or "sweep"
        run = c.create_run(
            exp_id,
            run_name=f"{name}-{sweep_id}",
            tags={
                contract.SWEEP_ID: sweep_id,
                contract.ROLE: contract.SWEEP,
                contract.PRESET: str(name),
                **({contract.QUESTION: str(config.question)} if config.get("question") else {}),
                **({contract.CRITERIA: _criteria(config)} if config.get("criteria") else {}),
                contract.OVERRIDES: tracking.redact(json.dumps(list(config.hydra.overrides.task))),
                contract.LAUNCH: tracking.redact(json.dumps(list(config.hydra.overrides.hydra))),
                **tracking.environment_tags(),
                **tracking.source_tags(),
                tracking.NOTE: tracking.sweep_note(config, name, cells, "running"),
            },
        )
        if cells is not None:  # the planned grid, so the report can show cells that never ran
            c.log_text(run.info.run_id, tracking.redact(json.dumps(cells, indent=1)), contract.GRID_ARTIFACT)
        info = {
            contract.SWEEP_ID: sweep_id,
            "parent_run_id": run.info.run_id,
            "experiment_id": exp_id,
            "n_cells": len(cells) if cells is not None else None,
            "started": time.time(),
            # estimated cost of each cell in launch order, for the cells' ETA (study/launch_order.py)
            "costs": None if cells is None else [estimated_cost(c) for c in order_cells(cells, order)],
        }
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(info))
        print(
            f"[sweep {sweep_id}] {info['n_cells'] or '?'} cells -> {tracking.redact(t.uri)} "
            f"experiment {t.experiment!r}, parent run {run.info.run_id}",
            flush=True,
        )

    def on_job_start(self, config, **kwargs) -> None:
        """Hydra has just written the job's `.hydra/` files (and a multirun its `multirun.yaml`) with
        the overrides as typed: hide URI credentials in them before the job runs."""
        files = []
        sub = config.hydra.get("output_subdir")
        if sub:
            files += list((Path(config.hydra.runtime.output_dir) / sub).glob("*.yaml"))
        if config.hydra.mode == RunMode.MULTIRUN:
            files.append(Path(config.hydra.sweep.dir) / "multirun.yaml")
        tracking.redact_files(files)

    def on_multirun_end(self, config, **kwargs) -> None:
        info = read_sweep_file(config.hydra.sweep.dir)
        if info is None:
            return
        try:
            tracking.wait_for_store(config.tracking.uri, float(config.tracking.wait_s))
            self._end(config, info)
        except Exception as err:  # Hydra would print it as a warning with the store's credentials
            print(
                f"[sweep {info[contract.SWEEP_ID]}] error: could not close parent run {info['parent_run_id']} "
                f"({tracking.redact(str(err))[:300]}); it stays RUNNING until the next sweep or run on this "
                "store closes it (KILLED)",
                file=sys.stderr,
                flush=True,
            )

    def _end(self, config, info: dict) -> None:
        c = tracking.client(config.tracking.uri)
        children = c.search_runs(
            [info["experiment_id"]], contract.cells_query(info[contract.SWEEP_ID]), max_results=50000
        )
        reused = c.search_runs(
            [info["experiment_id"]], contract.reused_query(info[contract.SWEEP_ID]), max_results=50000
        )
        outcomes = [r.data.tags.get(contract.OUTCOME, "unknown") for r in children] + ["reused"] * len(reused)
        children = children + reused
        counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
        wall = time.time() - info["started"]
        run = tracking.RunLogger(c, info["parent_run_id"])
        verdict_counts = {}
        for r in children:
            v = r.data.tags.get(contract.VERDICT, "unknown")
            verdict_counts[v] = verdict_counts.get(v, 0) + 1
        done = (
            f"done in {time.time() - info['started']:.0f} s. Cells by outcome: "
            + ", ".join(f"{n} {o}" for o, n in counts.items())
            + ". By gradient verdict: "
            + ", ".join(f"{n} {v}" for v, n in sorted(verdict_counts.items()))
            + "."
        )
        note = tracking.sweep_note(config, config.get("experiment_name") or "sweep", grid_cells(config), done)
        run.tags({f"cells_{o}": n for o, n in counts.items()} | {"cells": len(children), tracking.NOTE: note})
        run.metrics({"sweep/wall_time_s": wall, "sweep/cells": len(children)}, step=0)
        run.end("FINISHED")
        print(
            f"[sweep {info[contract.SWEEP_ID]}] done in {wall:.0f} s: "
            + ", ".join(f"{n} {o}" for o, n in counts.items()),
            flush=True,
        )
        missing = (info["n_cells"] or len(children)) - len(children)
        if counts.get("failed") or missing:
            raise SystemExit(
                f"[sweep {info[contract.SWEEP_ID]}] {counts.get('failed', 0)} cell(s) failed "
                f"(tracebacks: artifact traceback.txt of their runs), {missing} cell(s) not run "
                "(invalid values, printed above)"
            )
