"""A report folder alone rebuilds its report: the same tables, every figure, no store."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers.commands import ROOT, run_report

COMMITTED = sorted(p.parent.parent for p in (ROOT / "reports").glob("*/tables/meta.json"))


def test_every_committed_report_folder_carries_its_metadata():
    folders = [p for p in (ROOT / "reports").iterdir() if (p / "REPORT.md").is_file()]
    assert folders and sorted(folders) == COMMITTED


@pytest.mark.parametrize("name", ["edge_of_stability", "gd_variants"])
def test_a_committed_report_redrawn_from_its_folder_has_the_same_tables_and_figures(tmp_path, name):
    (folder,) = [p for p in COMMITTED if p.name.startswith(f"{name}-")]
    proc = run_report(["--from", str(folder), "--out", str(tmp_path / "again")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = tmp_path / "again"
    for table in sorted((folder / "tables").iterdir()):
        assert (again / "tables" / table.name).read_bytes() == table.read_bytes(), table.name
    assert sorted(p.name for p in (again / "tables").iterdir()) == sorted(p.name for p in (folder / "tables").iterdir())
    pngs = lambda f: sorted(p.name for p in (f / "figures").glob("*.png"))  # noqa: E731 (PDFs: --formats)
    assert pngs(again) == pngs(folder)
    assert "--from <this folder>" in (again / "REPORT.md").read_text()


def test_redraw_options_work_from_a_folder_and_bad_folders_are_one_line(tmp_path):
    (folder,) = [p for p in COMMITTED if p.name.startswith("gd_variants-")]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    proc = run_report(["--from", str(copy), "--verdict", "progress_healthy=0.99", "--formats", "png,svg"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]  # default --out: the folder itself, redrawn
    cells = pd.read_csv(copy / "tables" / "cells.csv")
    committed = pd.read_csv(folder / "tables" / "cells.csv")
    assert (cells["verdict"] != committed["verdict"]).any()  # recomputed under the new threshold
    assert "progress_healthy 0.99" in (copy / "REPORT.md").read_text()
    assert list(copy.glob("figures/*.svg")) and not list(copy.glob("figures/*.pdf"))
    for bad, says in ((tmp_path / "nowhere", "no tables/meta.json"), (Path(ROOT / "conf"), "no tables/meta.json")):
        proc = run_report(["--from", str(bad), "--out", str(tmp_path / "x")], tmp_path)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
