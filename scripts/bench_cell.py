"""Cost of a whole grid cell against plain Keras, in one warm process.

For default-grid cells (relu_he + adam and sigmoid_glorot + sgd at depths 4, 8 and 16), times
(a) plain Keras at its defaults on the same model, data, batches and epochs: build, compile, fit
    with validation, evaluate on the test set;
(b) the harness's whole cell, `train(cfg)` recording into a temporary SQLite store, with
    diagnostics `default`, and (c) with `full`.
After one warm-up of every variant, repeats run interleaved with the order rotated, so the drift of
a shared machine hits every variant alike. Per cell the ratio is median(harness) / median(plain);
the printed ratio is the median over cells.

Then (unless --memory-cells 0) a sequential sweep of N default-grid cells in this process, printing
the resident memory after the first and after the last cell.

Writes reports/benchmarks/cell.json. Last line: `cell_ratio default=X.XX full=Y.YY`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from study import data, models, outputs, tracking  # noqa: E402
from study.config import plan  # noqa: E402
from study.train import train  # noqa: E402

CELLS = [(a, o, d) for (a, o) in (("relu_he", "adam"), ("sigmoid_glorot", "sgd")) for d in (4, 8, 16)]
VARIANTS = ("plain", "plain_eval", "default", "full")
EVAL_BATCH = 1024  # the harness's evaluation batch (validation, test)


def config(arm: str, optimizer: str, depth: int, diagnostics: str, uri: str, seed: int = 0):
    overrides = [
        "experiment=grid",
        f"arm={arm}",
        f"optimizer={optimizer}",
        f"model.depth={depth}",
        f"diagnostics={diagnostics}",
        f"tracking.uri={uri}",
        f"seed={seed}",
        "train.verbose=0",
    ]
    with initialize_config_dir(str(tracking.REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def plain_keras(cfg, eval_batch: int | None = None) -> float:
    """The same cell in plain Keras, at Keras's defaults (evaluation batches as large as the
    training batches), or with `eval_batch` examples per evaluation batch; returns wall seconds."""
    p = plan(cfg)  # the cell's own plan (checks and resolved values), before the clock starts
    t = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(p.seed)
    splits = p.data.load(p.seed)
    bs = p.batch_size
    model = models.build(p.model, splits.input_shape, splits.num_classes)
    model.compile(
        optimizer=p.optimizer.build(p.schedule.build(p.optimizer.learning_rate, p.steps_per_epoch, p.epochs)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        data.pipeline(splits.x_train, splits.y_train, bs, shuffle_seed=p.seed),
        validation_data=data.pipeline(splits.x_val, splits.y_val, eval_batch or bs),
        epochs=p.epochs,
        verbose=0,
    )
    model.evaluate(data.pipeline(splits.x_test, splits.y_test, eval_batch or bs), verbose=0)
    return time.perf_counter() - t


INSIDE: dict[str, list[float]] = {}  # harness variant -> seconds inside Keras's fit and evaluate


def harness(cfg) -> float:
    t = time.perf_counter()
    r = train(cfg)
    wall = time.perf_counter() - t
    INSIDE.setdefault(cfg.diagnostics.level, []).append(r["time/fit_s"] + r["time/evaluate_s"])
    OUTSIDE.setdefault(cfg.diagnostics.level, []).append(wall - INSIDE[cfg.diagnostics.level][-1])
    return wall


OUTSIDE: dict[str, list[float]] = {}  # harness variant -> seconds of the cell outside fit and evaluate


def rss_mib() -> float:
    """Resident memory now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--reps", type=int, default=3, help="timed repeats per cell and variant, after a warm-up (0: memory sweep only)"
    )
    p.add_argument("--depths", default="4,8,16")
    p.add_argument("--memory-cells", type=int, default=24, help="cells of the sequential memory sweep (0: skip)")
    p.add_argument("--out", default=None, help="default reports/benchmarks/cell.json (cell-memory.json with --reps 0)")
    args = p.parse_args()
    bench = tracking.REPO_ROOT / "reports" / "benchmarks"
    args.out = args.out or str(bench / ("cell.json" if args.reps else "cell-memory.json"))
    outputs.result_file(args.out)  # before minutes of measuring
    depths = [int(x) for x in args.depths.split(",")]
    cells = [c for c in CELLS if c[2] in depths]
    times: dict[str, dict[str, list[float]]] = {f"{a}-{o}-d{d}": {v: [] for v in VARIANTS} for a, o, d in cells}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cfgs = {
            (cell, v): config(*cell, "default" if v.startswith("plain") else v, uri) for cell in cells for v in VARIANTS
        }
        run = {
            "plain": plain_keras,
            "plain_eval": lambda cfg: plain_keras(cfg, EVAL_BATCH),
            "default": harness,
            "full": harness,
        }
        for v in VARIANTS if args.reps else ():  # warm-up: first tracing, imports, store creation, data loading
            run[v](cfgs[(cells[0], v)])
        for rep in range(args.reps):
            for i, cell in enumerate(cells):
                k = (rep + i) % len(VARIANTS)
                order = VARIANTS[k:] + VARIANTS[:k]
                name = "{}-{}-d{}".format(*cell)
                for v in order:
                    times[name][v].append(run[v](cfgs[(cell, v)]))
                print(
                    f"rep {rep + 1}/{args.reps} {name}: "
                    + " ".join(f"{v}={times[name][v][-1]:.2f}s" for v in VARIANTS),
                    flush=True,
                )
        outside = {v: statistics.median(t) for v, t in OUTSIDE.items()}  # timed cells and warm-up
        share = {v: sum(OUTSIDE[v]) / (sum(OUTSIDE[v]) + sum(INSIDE[v])) for v in OUTSIDE}
        memory = None
        if args.memory_cells:
            grid = itertools.product(("sigmoid_glorot", "tanh_glorot", "relu_he", "relu_glorot"), ("sgd", "adam"), (4,))
            plan = list(itertools.islice(itertools.cycle(grid), args.memory_cells))
            rss = []
            for a, o, d in plan:
                harness(config(a, o, d, "full", uri, seed=len(rss)))
                rss.append(rss_mib())
            memory = {"cells": len(plan), "rss_first_mib": rss[0], "rss_last_mib": rss[-1], "rss_mib": rss}
    if not args.reps:  # --reps 0: the memory sweep alone
        outputs.write_json(args.out, {"memory": memory, "config": vars(args), "machine": tracking.machine()})
        growth = memory["rss_last_mib"] / memory["rss_first_mib"] - 1
        print(
            f"memory over {memory['cells']} cells: {memory['rss_first_mib']:.0f} MiB after the first, "
            f"{memory['rss_last_mib']:.0f} MiB after the last ({growth:+.1%})"
        )
        return
    ratios = {
        name: {v: statistics.median(t[v]) / statistics.median(t["plain"]) for v in ("default", "full")}
        for name, t in times.items()
    }
    own = {  # against plain Keras with the harness's evaluation batches: the harness's own cost
        name: {v: statistics.median(t[v]) / statistics.median(t["plain_eval"]) for v in ("default", "full")}
        for name, t in times.items()
    }
    result = {
        "cell_ratio": {v: statistics.median(r[v] for r in ratios.values()) for v in ("default", "full")},
        "own_ratio": {v: statistics.median(r[v] for r in own.values()) for v in ("default", "full")},
        "own_ratios": own,
        "ratios": ratios,
        "median_s": {name: {v: statistics.median(t[v]) for v in VARIANTS} for name, t in times.items()},
        "times_s": times,
        "outside_fit_evaluate_median_s": outside,
        "outside_fit_evaluate_share": share,
        "memory": memory,
        "config": vars(args),
        "machine": tracking.machine(),
    }
    outputs.write_json(args.out, result)
    for name, t in result["median_s"].items():
        r = ratios[name]
        print(
            f"{name}: plain {t['plain']:.2f} s, plain with eval batch {EVAL_BATCH} {t['plain_eval']:.2f} s, "
            f"default {t['default']:.2f} s ({r['default']:.2f}x), "
            f"full {t['full']:.2f} s ({r['full']:.2f}x)"
        )
    print(
        "harness time outside Keras's fit and evaluate: "
        + ", ".join(f"{v} {outside[v]:.2f} s a cell ({share[v]:.1%} of its time)" for v in outside)
    )
    if memory:
        growth = memory["rss_last_mib"] / memory["rss_first_mib"] - 1
        print(
            f"memory over {memory['cells']} cells: {memory['rss_first_mib']:.0f} MiB after the first, "
            f"{memory['rss_last_mib']:.0f} MiB after the last ({growth:+.1%})"
        )
    c, o = result["cell_ratio"], result["own_ratio"]
    print(
        f"against plain Keras with evaluation batches of {EVAL_BATCH}: default={o['default']:.2f} full={o['full']:.2f}"
    )
    print(f"cell_ratio default={c['default']:.2f} full={c['full']:.2f}")


if __name__ == "__main__":
    main()
