"""Rerun the sweep that made a committed report and compare: `make reproduce FROM=reports/<folder>`.

python scripts/reproduce.py --from reports/gd_variants-20261201-111051-df4150
python scripts/reproduce.py --from reports/<folder> --tolerance 0.01 --jobs 2

Reads the folder's tables/meta.json (preset and command-line overrides of the sweep), reruns that
sweep into its own store, reproductions/<folder name>/mlflow.db (a second call resumes: finished
cells are skipped), builds its report there, then prints per cell the committed and new test
accuracy, verdict and outcome, and per reproduction claim whether it held. Exit 0 when every cell is
identical or within the tolerance on test accuracy with the same verdict and outcome and every
claim held; 1 otherwise; 2 for bad input. The tolerance is 0 (exact) when the sweep ran with
train.deterministic=true on a CPU of the same model, else --tolerance (default 0.02).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from study import contract, outputs, tracking
from study.report import collect, compare


def plan(folder: Path) -> tuple[dict, list[str]]:
    """The committed sweep's metadata and the overrides that rerun it."""
    meta_path = folder / "tables" / collect.META
    if not meta_path.is_file():
        raise SystemExit(f"error: --from {folder}: no tables/{collect.META} there (not a report folder)")
    meta = json.loads(meta_path.read_text())
    if not meta.get(contract.PRESET) or meta.get(contract.PRESET) in ("runs", "single"):
        raise SystemExit(f"error: --from {folder}: not the report of a sweep (preset {meta.get(contract.PRESET)!r})")
    given = json.loads(meta.get(contract.OVERRIDES) or "[]")
    kept = [o for o in given if not o.lstrip("+~").startswith(contract.WHERE)]
    if not any(o.startswith("experiment=") for o in kept):
        kept.insert(0, f"experiment={meta[contract.PRESET]}")
    return meta, kept


def tolerance(meta: dict, overrides: list[str], asked: float) -> float:
    here = tracking.environment_tags().get(contract.CPU)
    exact = "train.deterministic=true" in overrides and meta.get(contract.CPU) and meta.get(contract.CPU) == here
    return 0.0 if exact else asked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="folder", required=True, help="the committed report folder")
    p.add_argument("--into", default=None, help="its store and report (default reproductions/<folder name>/)")
    p.add_argument("--tolerance", type=float, default=0.02, help="on test accuracy, unless exact (see above)")
    p.add_argument("--jobs", type=int, default=1, help="joblib workers (default 1)")
    a = p.parse_args()
    folder = Path(a.folder)
    meta, overrides = plan(folder)
    into = Path(a.into or tracking.REPO_ROOT / "reproductions" / folder.name)
    if into.exists() and not (into / outputs.MARKER).is_file():
        try:
            outputs.check_target(into, "--into")
        except outputs.OutputError as err:
            raise SystemExit(f"error: {err}") from None
    into.mkdir(parents=True, exist_ok=True)
    (into / outputs.MARKER).write_text("made by scripts/reproduce.py; its store and report\n")
    tol = tolerance(meta, overrides, a.tolerance)
    wall = meta.get("sweep/wall_time_s")
    print(
        f"reproducing {folder.name}: preset {meta[contract.PRESET]}, overrides {overrides or 'none'}; "
        f"expected wall time about {float(wall) / 60:.1f} min (the committed sweep's, on "
        f"{meta.get(contract.DEVICE, '?')}{', ' + meta[contract.CPU] if meta.get(contract.CPU) else ''}; "
        "finished cells of an "
        f"earlier call are skipped); tolerance on test accuracy: {'exact' if tol == 0 else tol}",
        flush=True,
    )
    uri = f"sqlite:///{into.resolve()}/mlflow.db"
    launch = [] if a.jobs <= 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={a.jobs}"]
    t = time.time()
    sweep = subprocess.run(
        [sys.executable, "-m", "study.train", "-m", *overrides, f"tracking.uri={uri}", *launch]
        + [f"hydra.sweep.dir={into.resolve()}/multirun/{time.strftime('%Y%m%d-%H%M%S')}"],
        cwd=tracking.REPO_ROOT,
    )
    print(f"sweep ended with exit code {sweep.returncode} after {time.time() - t:.0f} s", flush=True)
    if sweep.returncode in (2, 130, 129, 143):  # bad input or stopped: nothing to compare yet
        raise SystemExit(sweep.returncode)
    from study.report.build import build

    report = build(uri, meta.get("experiment", "activation-study"), None, str(into / "report"), log_to_run=False)
    committed, new = (pd.read_csv(f / "tables" / "cells.csv") for f in (folder, report))
    rows = compare.cells(committed, new, tol)
    claims = compare.claim_rows((folder / "REPORT.md").read_text(), (report / "REPORT.md").read_text())
    print(compare.table(rows, claims))
    failed = compare.failed(rows, claims)
    print(f"{'NOT reproduced' if failed else 'reproduced'}: {folder.name} (new report: {report}/REPORT.md)")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
