"""Output folders: a command writes into a new or empty folder or one it made itself, never another."""

import json
import os
from pathlib import Path

import pytest
from helpers.commands import run_report

from study import outputs


def _user_folder(tmp_path):
    folder = tmp_path / "paper"
    folder.mkdir()
    (folder / "draft.tex").write_text("\\section{Results}\n")
    (folder / "figures").mkdir()
    (folder / "figures" / "old.png").write_bytes(b"png")
    return folder


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_report_refuses_a_folder_it_did_not_make_and_changes_nothing_there(store, tmp_path):
    tmp_path = tmp_path / "work"  # beside the store
    tmp_path.mkdir()
    folder = _user_folder(tmp_path)
    before = _snapshot(folder)
    proc = run_report(["--tracking-uri", store[0], "--out", str(folder)], tmp_path)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --out ") and str(folder) in lines[0], proc.stderr
    assert "did not make" in lines[0] and outputs.MARKER in lines[0]
    assert _snapshot(folder) == before
    assert sorted(os.listdir(tmp_path)) == ["paper"]  # no temporary sibling left behind


@pytest.mark.parametrize(
    "where, says",
    [
        (lambda t: (t / "a.txt").write_text("x") and t / "a.txt", "is a file, not a folder"),
        (lambda t: (t / "a.txt").write_text("x") and t / "a.txt" / "report", "is a file, not a folder"),
        (lambda t: (t / "gone").symlink_to(t / "nowhere") or t / "gone", "broken symbolic link"),
    ],
    ids=["out-is-a-file", "out-inside-a-file", "out-broken-link"],
)
def test_report_out_paths_that_cannot_be_a_folder_are_one_line(store, tmp_path, where, says):
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    target = where(tmp_path)
    before = _snapshot(tmp_path)
    proc = run_report(["--tracking-uri", store[0], "--out", str(target)], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert _snapshot(tmp_path) == before


def test_replace_folder_swaps_whole_and_keeps_the_old_folder_on_failure(tmp_path):
    out = tmp_path / "report"
    with outputs.replace_folder(out, "test") as tmp:  # new folder
        (tmp / "a.txt").write_text("1")
    assert (out / outputs.MARKER).is_file() and (out / "a.txt").read_text() == "1"
    with outputs.replace_folder(out, "test") as tmp:  # its own folder: replaced whole
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [outputs.MARKER, "b.txt"]
    with pytest.raises(RuntimeError), outputs.replace_folder(out, "test") as tmp:  # a failure midway
        (tmp / "c.txt").write_text("3")
        raise RuntimeError("figure failed")
    assert sorted(p.name for p in out.iterdir()) == [outputs.MARKER, "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    empty = tmp_path / "empty"
    empty.mkdir()
    outputs.check_target(empty)  # an empty folder loses nothing
    (empty / "notes.md").write_text("mine")
    with pytest.raises(outputs.OutputError, match="did not make"):
        outputs.check_target(empty)


def test_every_committed_report_folder_carries_the_marker():
    reports = Path(__file__).resolve().parent.parent / "reports"
    folders = [p for p in reports.iterdir() if (p / "REPORT.md").is_file()]
    assert folders and all((p / outputs.MARKER).is_file() for p in folders)


def test_a_result_file_is_checked_before_measuring_and_written_whole(tmp_path, capsys):
    folder, prose = tmp_path / "results", tmp_path / "notes.txt"
    folder.mkdir()
    prose.write_text("my notes")
    for bad, says in ((folder, "is a folder"), (prose, "not a JSON result file"), (prose / "r.json", "is a file")):
        with pytest.raises(SystemExit) as stop:
            outputs.result_file(bad)
        assert stop.value.code == 2 and says in capsys.readouterr().err
    assert prose.read_text() == "my notes"
    good = tmp_path / "new" / "bench.json"
    outputs.write_json(outputs.result_file(good), {"ratio": 1.25})
    outputs.write_json(good, {"ratio": 1.5})  # a result written before is replaced
    assert json.loads(good.read_text()) == {"ratio": 1.5}
    assert sorted(p.name for p in good.parent.iterdir()) == ["bench.json"]
    good.unlink()
    good.mkdir()  # the path went bad while measuring: the measurement is printed, not lost
    with pytest.raises(SystemExit):
        outputs.write_json(good, {"ratio": 2.0})
    out = capsys.readouterr()
    assert '"ratio": 2.0' in out.out and "error: --out" in out.err
