"""Cells per hour of a CPU grid (8 cells of the `grid` preset on Fashion-MNIST: relu and tanh × sgd
and adam × depth 4 and 16, whose mean cell time is close to the whole grid's), run sequentially and
with 2 joblib jobs, in one run of this script. Target: speedup >= 1.5 on 2 cores.

Each sweep is a fresh `python -m study.train -m ...` process (as `make sweep` runs it) into its own
temporary store; the time includes start-up. It also prints how many cores each sweep kept busy
(CPU seconds of all its processes over wall seconds), and the sum of its cells' own durations
(MLflow run start to end). Those sums give the speedup without start-up and tail:
jobs × (sequential cell seconds) / (parallel cell seconds), a ceiling for this grid on this machine.
`--repeat N` alternates N sequential and N parallel sweeps and compares the totals (noisy machines).
Last line printed: `speedup=<x>`.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from study import contract, outputs, tracking

GRID = ["experiment=grid", "arm=relu_he,tanh_glorot", "optimizer=sgd,adam", "model.depth=4,16", "seed=0"]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sweep(jobs: int, extra: list[str]) -> tuple[float, int, float, float]:
    """Wall seconds, finished cells, CPU seconds of the sweep and all its workers, and the sum of
    its cells' run durations."""
    with tempfile.TemporaryDirectory() as tmp:
        launch = [] if jobs == 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
        t, cpu = time.perf_counter(), _cpu_s()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "study.train",
                "-m",
                *GRID,
                *launch,
                *extra,
                f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                f"hydra.sweep.dir={tmp}/sweep",
            ],
            capture_output=True,
            text=True,
        )
        seconds, cpu = time.perf_counter() - t, _cpu_s() - cpu
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        c = tracking.client(f"sqlite:///{tmp}/mlflow.db")
        cells = c.search_runs([e.experiment_id for e in c.search_experiments()], contract.all_cells_query())
        cell_s = sum((r.info.end_time - r.info.start_time) / 1000 for r in cells)
        return seconds, proc.stdout.count(" finished: "), cpu, cell_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(tracking.REPO_ROOT / "reports" / "benchmarks" / "sweep.json"))
    p.add_argument("--repeat", type=int, default=1, help="sequential and parallel sweeps, alternated")
    p.add_argument("extra", nargs="*", help="more Hydra overrides for both sweeps")
    a = p.parse_args()
    outputs.result_file(a.out)  # before minutes of measuring
    seq, par = [], []
    for _ in range(a.repeat):
        seq.append(sweep(1, a.extra))
        par.append(sweep(a.jobs, a.extra))
    (seq_s, seq_n, seq_cpu, seq_cells), (par_s, par_n, par_cpu, par_cells) = (
        [sum(x) for x in zip(*runs)] for runs in (seq, par)
    )
    seq_rate, par_rate = 3600 * seq_n / seq_s, 3600 * par_n / par_s
    cores = os.cpu_count() or 1
    ceiling = a.jobs * seq_cells / par_cells
    result = {
        "cells": seq_n // a.repeat,
        "repeat": a.repeat,
        "sequential_s": seq_s / a.repeat,
        "parallel_s": par_s / a.repeat,
        "jobs": a.jobs,
        "cores": cores,
        "cpu_s": {"sequential": seq_cpu / a.repeat, "parallel": par_cpu / a.repeat},
        "cores_busy": {"sequential": seq_cpu / seq_s, "parallel": par_cpu / par_s},
        "cell_s": {"sequential": seq_cells / seq_n, "parallel": par_cells / par_n},
        "cells_per_hour": {"sequential": seq_rate, "parallel": par_rate},
        "speedup_per_repeat": [(s[0] / s[1]) / (p[0] / p[1]) for s, p in zip(seq, par)],
        "ceiling_without_startup_and_tail": ceiling,
        "speedup": par_rate / seq_rate,
    }
    outputs.write_json(a.out, result)
    print(
        f"sequential: {seq_n} cells in {seq_s:.0f} s ({seq_rate:.0f} cells/h, {seq_cpu / seq_s:.2f} of {cores} "
        f"cores busy, {seq_cells / seq_n:.1f} s a cell); {a.jobs} jobs: {par_n} cells in {par_s:.0f} s "
        f"({par_rate:.0f} cells/h, {par_cpu / par_s:.2f} cores busy, {par_cells / par_n:.1f} s a cell)"
    )
    if a.repeat > 1:
        print("speedup per repeat: " + ", ".join(f"{x:.2f}" for x in result["speedup_per_repeat"]))
    print(
        f"ceiling without start-up and tail: {a.jobs} x {seq_cells / seq_n:.1f} / {par_cells / par_n:.1f} "
        f"= {ceiling:.2f}"
    )
    print(f"speedup={result['speedup']:.2f}")


if __name__ == "__main__":
    main()
