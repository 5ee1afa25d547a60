"""Every study preset at `size=tiny`, end to end: the sweep, then its report with its own figures.

Axes are cut to two to four cells each (command-line values override a preset's swept values), so
all of them run in a few minutes; every preset-specific axis keeps at least two values, and
`mitigations` keeps all four (each is its own code path). Sweeps and reports run in this process
(helpers.commands.run_main, run_report): the same code as the commands, without their imports.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.commands import ROOT, run_main, run_report
from helpers.mlflow_queries import assert_no_healthy_at_chance

from study import contract, verdicts
from study.report import collect, sections

pytestmark = pytest.mark.slow

PRESETS = {  # preset: the axis overrides of its tiny run (its figures: its registered section's)
    "gd_variants": ["train.batch_size=1,full"],
    "lr_schedules": ["optimizer=adam", "schedule=constant,cosine", "model.depth=4"],
    "optimizers_tuned": ["optimizer=adam", "optimizer.lr_scale=0.1,10", "model.activation=relu", "model.depth=4"],
    "init": ["model.init=he_normal,small_normal", "model.activation=relu", "model.depth=4"],
    "regularization": ["regularization=none,dropout", "model.activation=relu"],
    "mitigations": ["model.activation=sigmoid", "model.depth=4"],
    "glorot_bengio_2010": ["model.activation=tanh", "seed=0"],
    "he_2015": ["model.depth=4", "seed=0"],
    "he_2015_width": ["model.depth=4", "model.width=4,8", "seed=0"],
    "he_2015_fig2": ["model.depth=3,4", "seed=0", "train.epochs=2"],
    "width": ["model.width=4,8", "model.activation=relu"],
    "second_order": ["optimizer=newton,sgd"],
    "second_order_pilot": ["optimizer=sgd,adam", "optimizer.lr_scale=0.25,1"],
    "edge_of_stability": ["optimizer.learning_rate=0.5,2.0", "seed=0,1"],
    "grid_pilot": ["arm=relu_he", "optimizer=sgd", "optimizer.lr_scale=1,30", "model.depth=8", "seed=100"],
    "grid_reference": ["arm=relu_he,tanh_glorot", "optimizer=adam", "train.epochs=7"],
    "signal_propagation": ["train.epochs=0", "model=mlp", "model.init_scale=1.0,2.0", "seed=0"],
}


def test_every_preset_file_has_a_tiny_run_here():
    files = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    assert files - {"grid", "smoke", "paper"} == set(PRESETS)


def _sweep_and_report(preset: str, tmp: Path, uri: str):
    """The preset's tiny sweep, then its report, each as its command runs (in this process)."""
    proc = run_main(
        [
            "-m",
            f"experiment={preset}",
            "size=tiny",
            *PRESETS[preset],
            f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp}/sweep",
        ],
        tmp,
    )
    if proc.returncode != 0:
        return proc, None
    return proc, run_report(["--tracking-uri", uri, "--out", str(tmp / "report")], tmp)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_at_tiny_size_sweeps_and_reports(preset, tmp_path, store):
    """Each preset is its own test, so that pytest-xdist spreads them over its workers."""
    proc, report = _sweep_and_report(preset, tmp_path, store[0])
    tmp = tmp_path
    overrides = PRESETS[preset]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    out = tmp / "report"
    sweep = collect.from_folder(out)
    view = sections.View(verdicts.Thresholds(), None, None)
    assert sections.SECTIONS[preset] is not sections.SECTIONS["grid"]  # its own section, not the generic one
    registered = [f.name for f in sections.section(sweep, view).figures]  # the registry's names, not a copy
    for name in registered:  # every figure of the section drawn
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000, name
    assert assert_no_healthy_at_chance(store[0]) >= 2
    cells = pd.read_csv(out / "tables" / "cells.csv")
    assert len(cells) >= 2 and set(cells["outcome"]) == {"finished"}
    plan = yaml.safe_load((ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text())
    if plan.get("criteria"):  # the decision rules reach the report through the parent run, as written
        assert json.loads(sweep.info[contract.CRITERIA]) == plan["criteria"]
        assert "Rules from the preset's `criteria`" in (out / "REPORT.md").read_text()
    swept = plan["hydra"]["sweeper"]["params"]
    kept = [
        k for k in swept if "," in str(swept[k]) and not any(o.startswith(f"{k}=") and "," not in o for o in overrides)
    ]
    for key in kept:  # every axis the tiny run kept varies in the report's table (its column: collect's)
        assert cells[collect.column(key)].nunique() >= 2, key
    text = (out / "REPORT.md").read_text()
    assert "**Question.**" in text and all(f"figures/{n}.png" in text for n in registered)
    assert "n/a" not in text.split("## Gradient verdict")[0], text
