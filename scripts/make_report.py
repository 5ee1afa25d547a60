"""Turn a sweep's MLflow runs into tables, figures and REPORT.md (never trains).

python scripts/make_report.py                       # latest sweep, local store
python scripts/make_report.py --tracking-uri sqlite:///<dir>/mlflow.db --out <dir>/report
python scripts/make_report.py --tracking-uri http://127.0.0.1:5000 --sweep 20261126-101500-ab12cd
python scripts/make_report.py --single                       # every run trained without -m
python scripts/make_report.py --run <run id> --run <run id>  # chosen runs
python scripts/make_report.py --from reports/<folder> [--out <dir>]  # from a report folder alone
"""

from __future__ import annotations

import argparse
import sys
import time

from study import tracking, verdicts
from study.errors import ConfigError
from study.report.build import build


def main() -> None:
    """Bad input or an unusable store or --out: one `error:` line on stderr, exit 2."""
    try:
        _main()
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        print(stop.code if stop.code.startswith("error:") else f"error: {stop.code}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _main() -> None:
    p = argparse.ArgumentParser(description="Report of one sweep: tables, figures, REPORT.md.")
    p.add_argument("--tracking-uri", default=tracking.default_uri(), help="MLflow store (default: ./mlflow.db)")
    p.add_argument("--experiment", default="activation-study")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sweep", default=None, help="sweep id (default: the latest sweep of the experiment)")
    which.add_argument(
        "--run", action="append", default=[], metavar="RUN_ID", help="report these runs instead of a sweep (repeatable)"
    )
    which.add_argument("--single", action="store_true", help="report every single run (trained without -m)")
    which.add_argument(
        "--from",
        dest="folder",
        default=None,
        metavar="FOLDER",
        help="rebuild a report folder from its own tables, no store needed (default --out: that folder)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: reports/<preset>-<sweep id>/): a new or empty folder, or one a report made "
        "before (it holds .study-report); any other folder is refused, untouched",
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="FOLDER",
        help="a committed report folder whose cells with this sweep's arms, depths and seeds are drawn beside it",
    )
    p.add_argument("--depth", type=int, default=None, help="depth of figures c, e-h (default: the deepest)")
    p.add_argument("--optimizer", default=None, help="optimizer of figures c, f-h (default: sgd if present)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent run")
    p.add_argument("--workers", type=int, default=2, help="figures drawn at once in forked processes (1: in this one)")
    p.add_argument(
        "--formats", default="png,pdf", help="figure files to write, comma-separated (png first: the report shows it)"
    )
    p.add_argument(
        "--verdict",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a verdict threshold, e.g. --verdict progress_healthy=0.3 (repeatable; README "
        "'Gradient verdict' lists them); verdicts are recomputed from the recorded evidence",
    )
    a = p.parse_args()
    try:
        pairs = dict(v.split("=", 1) for v in a.verdict if "=" in v)
        if len(pairs) != len(a.verdict):
            raise ConfigError(f"--verdict takes KEY=VALUE, got {[v for v in a.verdict if '=' not in v][0]!r}")
        thresholds = verdicts.Thresholds.from_mapping(pairs)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip())
    if not formats or formats[0] != "png" or not set(formats) <= {"png", "pdf", "svg"}:
        raise SystemExit(f"error: --formats={a.formats!r}: png first, then any of pdf, svg (comma-separated)")
    a.formats = formats
    try:  # read-only: a mistyped store path is an error, not a new empty store
        if a.folder is None:
            tracking.check_sqlite(a.tracking_uri, must_exist=True)
    except tracking.TrackingError as err:
        raise SystemExit(f"error: {err}") from None
    t = time.perf_counter()
    try:
        out = _build(a, thresholds)
    except (tracking.TrackingError, ConfigError) as err:  # a store or --out it cannot use: one line
        raise SystemExit(f"error: {tracking.redact(str(err))}") from None
    print(f"report written to {out}/REPORT.md in {time.perf_counter() - t:.1f} s")


def _build(a, thresholds):
    return build(
        a.tracking_uri,
        a.experiment,
        a.sweep,
        a.out,
        depth=a.depth,
        optimizer=a.optimizer,
        log_to_run=not a.no_log,
        thresholds=thresholds,
        run_ids=a.run or None,
        single=a.single,
        workers=a.workers,
        formats=a.formats,
        folder=a.folder,
        baseline=a.baseline,
    )


if __name__ == "__main__":
    main()
