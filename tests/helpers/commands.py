"""Commands as a user runs them: `python -m study.train`, `scripts/*.py`, in a subprocess or in this
process (the same main, parsing, output and exit code, without a new process's imports)."""

import contextlib
import io
import logging
import logging.config
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data=synthetic",
    "data.options.n_train=256",
    "data.options.n_test=64",
    "data.options.image_size=12",
    "model.width=4",
    "model.depth=2",
    "train.epochs=1",
    "train.batch_size=32",
    "train.verbose=0",
    "tracking.cell_figures=false",
]
# Each cell's own PNGs cost about 0.5 s of CPU: tests that do not look at them (most) turn them off;
# the shared smoke sweep, the report tests and the browser test keep them (`figures=True`).
NO_CELL_FIGURES = "tracking.cell_figures=false"


def _figures(args, figures: bool) -> list[str]:
    own = any(str(a).startswith("tracking.cell_figures=") for a in args)
    return list(args) if figures or own else [*args, NO_CELL_FIGURES]


def run_cli(args, tmp_path, extra_env=None, timeout=600, figures=False):
    """`python -m study.train ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "study.train", *_figures(args, figures)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Ran:
    """What a command left: exit code, standard output and error (as subprocess.run's result)."""

    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _in_process(fn, argv: list[str], cwd: Path) -> Ran:
    """Run `fn()` as a command with this argv in cwd, in this process: exit code as the process
    would end with (SystemExit's code; a message means 1, printed to stderr, as Python does)."""
    out, err = io.StringIO(), io.StringIO()
    saved, handlers = sys.argv, logging.getLogger().handlers[:]
    sys.argv = argv
    code = 0
    try:  # Hydra configures logging with dictConfig, which would close pytest's own log handlers
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            mock.patch("logging.config._clearExistingHandlers", lambda: None),
        ):
            try:
                fn()
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = 1 if isinstance(e.code, str) else int(e.code or 0)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved
        logging.getLogger().handlers[:] = handlers  # Hydra's handlers wrote to the captured streams
    return Ran(code, out.getvalue(), err.getvalue())


def run_main(args, tmp_path, figures=False) -> Ran:
    """`python -m study.train ARGS` run by Hydra's own main in this process, in tmp_path: the same
    parsing, callbacks, launcher, exit code and output as the command, without a new process's
    imports (about 8 s of CPU each). Tests of processes (signals, kills, launchers, concurrency)
    use run_cli."""

    main = lambda: runpy.run_module("study.train", run_name="__main__", alter_sys=True)  # as `python -m`
    return _in_process(main, ["study/train.py", *_figures(args, figures)], Path(tmp_path))


def run_script(name: str, args, cwd) -> Ran:
    """`python scripts/NAME ARGS` in this process, in cwd: the script's own main, argument parsing,
    output and exit code, without a new process's imports (2-3 s of CPU for MLflow alone)."""
    script = str(ROOT / "scripts" / name)
    return _in_process(lambda: runpy.run_path(script, run_name="__main__"), [name, *map(str, args)], Path(cwd))


def run_report(args, cwd) -> Ran:
    """`python scripts/make_report.py ARGS --workers 1` in this process (figures drawn here, no fork);
    PNG figures only unless ARGS name `--formats` (the smoke report's test checks the PDFs)."""
    formats = [] if "--formats" in args else ["--formats", "png"]
    return run_script("make_report.py", [*args, "--workers", "1", *formats], cwd)
