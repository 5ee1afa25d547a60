"""A rerun of a report's sweep compared with the report: identical on this machine; a changed cell or
claim is named and makes the exit non-zero."""

import pandas as pd
import pytest
from helpers.commands import ROOT, run_report, run_script
from helpers.mlflow_queries import runs
from mlflow.tracking import MlflowClient

from study.report import compare


def test_claims_are_read_from_every_table_with_a_reproduced_column():
    (folder,) = (ROOT / "reports").glob("glorot_bengio_2010-*")
    text = (folder / "REPORT.md").read_text()
    found = compare.claims(text)
    assert len(found) >= 3 and set(found.values()) <= {"yes", "no", "n/a"}
    first = next(iter(found))
    row = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    was = found[first]
    flipped = text.replace(row, row.rsplit("|", 2)[0] + f"| {'no' if was == 'yes' else 'yes'} |")
    rows = compare.claim_rows(text, flipped)
    assert [r[3] for r in rows].count("changed") == 1 and compare.failed([], rows)
    assert not compare.failed([], compare.claim_rows(text, text))


def test_cells_compare_by_name_with_the_tolerance_and_verdicts():
    base = pd.DataFrame(
        {"run_name": ["a", "b", "c"], "test/accuracy": [0.5, 0.6, 0.7], "verdict": ["healthy"] * 3}
    ).assign(outcome="finished")
    new = base.assign(**{"test/accuracy": [0.5000000001, 0.61, 0.7]})
    new.loc[2, "verdict"] = "slow"
    rows = {r.name: r.status for r in compare.cells(base, new, 0.02)}
    assert rows == {"a": compare.IDENTICAL, "b": compare.WITHIN, "c": compare.CHANGED}
    rows = {r.name: r.status for r in compare.cells(base, new.iloc[:2], 0.0)}
    assert rows == {"a": compare.IDENTICAL, "b": compare.CHANGED, "c": compare.CHANGED}


@pytest.mark.slow
@pytest.mark.xdist_group("smoke")
def test_a_smoke_report_reproduces_identically_and_a_changed_cell_fails(smoke_store, tmp_path):
    store, _ = smoke_store
    folder = tmp_path / "smoke-report"
    made = run_report(["--tracking-uri", f"sqlite:///{store}/mlflow.db", "--out", str(folder), "--no-log"], tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    into = tmp_path / "rerun"
    first = run_script("reproduce.py", ["--from", folder, "--into", into], tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "expected wall time about" in first.stdout
    assert "cells: 8 identical, 0 within tolerance, 0 changed" in first.stdout
    cells = pd.read_csv(folder / "tables" / "cells.csv")
    cells.loc[0, "test/accuracy"] += 0.1  # a committed number the rerun cannot match
    cells.to_csv(folder / "tables" / "cells.csv", index=False)
    second = run_script("reproduce.py", ["--from", folder, "--into", into], tmp_path)  # resumes: no training
    assert second.returncode == 1, second.stdout[-3000:]
    changed = [l for l in second.stdout.splitlines() if l.endswith("  changed")]
    assert len(changed) == 1 and changed[0].startswith(cells.loc[0, "run_name"]) and "NOT reproduced" in second.stdout
    rerun = runs(MlflowClient(tracking_uri=f"sqlite:///{into}/mlflow.db"))
    trained = [r for r in rerun if r.data.tags["role"] == "cell"]
    assert len(trained) == 8  # the second call reused the first one's cells
