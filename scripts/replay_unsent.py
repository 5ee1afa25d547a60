"""Replay metrics that a run spilled to `unsent_metrics_<run id>.jsonl` (tracking store lost mid-run)
into the run they belong to. Idempotent: a metric already in the store (same key, step, timestamp
and value) is not logged again, so a replay can be repeated or resumed after a new failure.

    python scripts/replay_unsent.py --tracking-uri http://127.0.0.1:5000 unsent_metrics_<run id>.jsonl ...
    python scripts/replay_unsent.py --tracking-uri http://127.0.0.1:5000        # every spill file here
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlflow.entities import Metric

from study import tracking

PREFIX = "unsent_metrics_"


def replay(uri: str, path: Path) -> tuple[int, int]:
    """(logged, already present) for one spill file."""
    run_id = path.stem.removeprefix(PREFIX)
    c = tracking.client(uri)
    c.get_run(run_id)  # fails clearly if the run is not in this store
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    present = {}
    for key in sorted({r["key"] for r in rows}):
        present[key] = {(m.step, m.timestamp, m.value) for m in c.get_metric_history(run_id, key)}
    todo = [r for r in rows if (r["step"], r["timestamp"], float(r["value"])) not in present[r["key"]]]
    todo = list({(r["key"], r["step"], r["timestamp"]): r for r in todo}.values())  # a line spilled twice
    for i in range(0, len(todo), tracking.MAX_METRICS_PER_BATCH):
        chunk = todo[i : i + tracking.MAX_METRICS_PER_BATCH]
        c.log_batch(run_id, metrics=[Metric(r["key"], float(r["value"]), r["timestamp"], r["step"]) for r in chunk])
    return len(todo), len(rows) - len(todo)


def main() -> None:
    p = argparse.ArgumentParser(description="Replay spilled metrics into their runs (idempotent).")
    p.add_argument("--tracking-uri", required=True, help="the store the runs belong to")
    p.add_argument("files", nargs="*", type=Path, help=f"spill files (default: {PREFIX}*.jsonl in this folder)")
    a = p.parse_args()
    files = a.files or sorted(Path.cwd().glob(f"{PREFIX}*.jsonl"))
    if not files:
        raise SystemExit(f"no {PREFIX}*.jsonl files given or found in {Path.cwd()}")
    try:
        tracking.check_sqlite(a.tracking_uri, must_exist=True)
        tracking.check_store(a.tracking_uri, None)
        for f in files:
            logged, present = replay(a.tracking_uri, f)
            print(f"{f.name}: {logged} metrics logged, {present} already in the store")
    except Exception as err:  # one line: the store or run that failed
        print(f"error: {tracking.redact(str(err))[:500]}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
