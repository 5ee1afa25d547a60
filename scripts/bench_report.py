"""Time of the report of one sweep (default: the latest sweep of the local store, e.g. the 100-cell
`make sweep` grid), written to a temporary folder and not logged. Target: under 30 s for 100 cells.

Last line printed: `report cells=<n> seconds=<t>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from study import outputs, tracking
from study.report.build import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=tracking.default_uri())
    p.add_argument("--experiment", default="activation-study")
    p.add_argument("--sweep", default=None)
    p.add_argument("--out", default=str(tracking.REPO_ROOT / "reports" / "benchmarks" / "report.json"))
    a = p.parse_args()
    outputs.result_file(a.out)  # before minutes of measuring
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = build(a.tracking_uri, a.experiment, a.sweep, tmp, log_to_run=False)
        seconds = time.perf_counter() - t
        cells = len(pd.read_csv(Path(out) / "tables" / "cells.csv"))
    outputs.write_json(a.out, {"cells": cells, "seconds": seconds, "tracking_uri": tracking.redact(a.tracking_uri)})
    print(f"report cells={cells} seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
