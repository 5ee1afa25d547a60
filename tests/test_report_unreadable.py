"""The report on a store where what it reads is missing or corrupt (issue 32, item 4): a table
artifact that exists but cannot be used, a run whose params or metrics are incomplete. Each is named
in a `warning:` line and in the cells table's `unreadable` column; everything else is reported; an
artifact that does not exist (a failed cell, a lower diagnostics level) is expected and says nothing.
On a copy of the shared smoke sweep's store (8 finished cells, full diagnostics)."""

import shutil
import sqlite3

import pandas as pd
import pytest
from helpers.commands import run_report
from mlflow.tracking import MlflowClient

from study.report import from_store

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke")]
EXPERIMENT = "activation-study"
ROWS_LOST = "); its rows are missing from the report"
VALUE_LOST = "); its value is missing from the report"
# run name -> what is done to one of its artifacts, and the `unreadable` column it then shows
BROKEN = {
    "relu-adam-d2-s0": "epochs.parquet",  # truncated
    "relu-sgd-d2-s0": "diagnostics.parquet",  # garbage
    "sigmoid-adam-d2-s0": "histograms.parquet",  # an empty file
    "sigmoid-adam-d4-s0": "signal.parquet",  # a folder (holding a valid parquet file)
    "sigmoid-sgd-d2-s0": "epochs.parquet",  # a valid parquet file with other columns
}
ABSENT = "relu-adam-d4-s0"  # histograms.parquet and signal.parquet deleted: a lower level, nothing to say
HAND_MADE = {  # runs added by hand with the sweep's tags
    "no-params": "params:model.activation,params:optimizer.name,params:model.depth,params:seed",
    "half-recorded": "params:model.depth,metrics:test/accuracy,params:model.width",
}


def copy_store(smoke_store, tmp_path, listed: bool = False):
    """The smoke store copied into tmp_path (database and artifacts), its runs pointed at the copy's
    artifacts: as file URIs (read in place), or with `listed` as plain paths, which the report lists
    and downloads as it does a remote store's."""
    src, _ = smoke_store
    shutil.copyfile(src / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copytree(src / "mlartifacts", tmp_path / "mlartifacts")
    old, new = (src / "mlartifacts").as_uri(), (tmp_path / "mlartifacts").as_uri()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)", (old, new))
        db.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
        if listed:
            db.execute("update runs set artifact_uri = replace(artifact_uri, 'file://', '')")
    db.close()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("role") == "cell"}
    assert len(runs) == 8
    return uri, client, runs


def artifact(tmp_path, run, name):
    return tmp_path / "mlartifacts" / run.info.run_id / "artifacts" / name


def break_artifacts(tmp_path, runs):
    """Each member of the class on its own run (BROKEN), and one run's optional artifacts absent."""
    path = {name: artifact(tmp_path, runs[name], what) for name, what in BROKEN.items()}
    data = path["relu-adam-d2-s0"].read_bytes()
    path["relu-adam-d2-s0"].write_bytes(data[: len(data) // 2])
    path["relu-sgd-d2-s0"].write_bytes(b"not a parquet file\n" * 100)
    path["sigmoid-adam-d2-s0"].write_bytes(b"")
    signal = path["sigmoid-adam-d4-s0"]
    signal.rename(tmp_path / "signal.parquet")
    signal.mkdir()
    (tmp_path / "signal.parquet").rename(signal / "part-0.parquet")  # pandas would read this folder as a table
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(path["sigmoid-sgd-d2-s0"])
    for name in ("histograms.parquet", "signal.parquet"):
        artifact(tmp_path, runs[ABSENT], name).unlink()


def add_hand_made(client, runs):
    """`no-params`: only the sweep's tags. `half-recorded`: a finished cell's record without
    `model.depth` and `test/accuracy`, with a width that is not a number."""
    model = runs["relu-adam-d4-s0"]
    tags = {k: model.data.tags[k] for k in ("sweep_id", "role")}
    bare = client.create_run(model.info.experiment_id, run_name="no-params", tags=tags)
    client.set_terminated(bare.info.run_id)
    half = client.create_run(model.info.experiment_id, run_name="half-recorded", tags={**tags, "outcome": "finished"})
    params = {k: v for k, v in model.data.params.items() if k != "model.depth"} | {"model.width": "wide"}
    for key, value in params.items():
        client.log_param(half.info.run_id, key, value)
    for key, value in model.data.metrics.items():
        if key != "test/accuracy":
            client.log_metric(half.info.run_id, key, value)
    client.set_terminated(half.info.run_id)
    return {"no-params": bare.info.run_id, "half-recorded": half.info.run_id}


def warnings_of(stderr: str) -> dict[tuple[str, str], str]:
    """(run name, item) -> the warning line, for every `warning: run` line."""
    out = {}
    for line in stderr.splitlines():
        if line.startswith("warning: run "):
            name, rest = line.removeprefix("warning: run ").split(" (", 1)
            out[name, rest.split("): ", 1)[1].split(" unreadable (")[0]] = line
    return out


def check_warnings(stderr: str, runs, hand_made: dict[str, str], folder) -> None:
    said = warnings_of(stderr)
    ids = {name: r.info.run_id for name, r in runs.items()} | hand_made
    expected = {(name, what) for name, what in BROKEN.items()}
    expected |= {(name, what) for name, items in HAND_MADE.items() for what in items.split(",")}
    assert set(said) == expected, stderr
    for (name, what), line in said.items():
        assert line.startswith(f"warning: run {name} ({ids[name]}): {what} unreadable ("), line
        assert line.endswith(VALUE_LOST if ":" in what else ROWS_LOST), line
        assert str(folder) not in line and "/tmp" not in line, line  # no machine path, the artifact's name
    cause = {key: line.split(" unreadable (", 1)[1] for key, line in said.items()}
    assert cause["relu-adam-d2-s0", "epochs.parquet"].startswith("ArrowInvalid: ")
    assert "'epochs.parquet'" in cause["relu-adam-d2-s0", "epochs.parquet"]
    assert cause["relu-sgd-d2-s0", "diagnostics.parquet"].startswith("ArrowInvalid: ")
    assert cause["sigmoid-adam-d2-s0", "histograms.parquet"].startswith("ArrowInvalid: ")
    assert cause["sigmoid-adam-d4-s0", "signal.parquet"].startswith("IsADirectoryError: a folder, not a parquet file")
    assert cause["sigmoid-sgd-d2-s0", "epochs.parquet"].startswith("ValueError: no column epoch, metric, value)")
    assert cause["no-params", "params:seed"].startswith("KeyError: not recorded)")
    assert cause["half-recorded", "metrics:test/accuracy"].startswith("KeyError: not recorded)")
    assert cause["half-recorded", "params:model.width"].startswith("ValueError: 'wide' is not an integer)")


def check_cells(cells: pd.DataFrame, runs) -> None:
    by_name = cells.set_index("run_name")
    assert sorted(by_name.index) == sorted([*runs, *HAND_MADE])  # every run kept, none twice
    unreadable = by_name["unreadable"].fillna("")  # a CSV reads an empty string back as NaN
    assert unreadable.to_dict() == {name: BROKEN.get(name, HAND_MADE.get(name, "")) for name in by_name.index}
    assert (by_name.loc[list(runs), "outcome"] == "finished").all()
    bare, half = by_name.loc["no-params"], by_name.loc["half-recorded"]
    assert bare["outcome"] == "unknown" and bare["activation"] == "unknown" and pd.isna(bare["depth"])
    assert half["activation"] == "relu" and pd.isna(half["depth"]) and pd.isna(half["width"])
    assert pd.isna(half["test/accuracy"]) and half["val/accuracy"] == by_name.loc["relu-adam-d4-s0", "val/accuracy"]


def test_unreadable_artifacts_params_and_metrics_are_named_and_the_rest_is_reported(smoke_store, tmp_path):
    uri, client, runs = copy_store(smoke_store, tmp_path)
    break_artifacts(tmp_path, runs)
    hand_made = add_hand_made(client, runs)
    out = tmp_path / "report"
    proc = run_report(["--tracking-uri", uri, "--out", out, "--no-log"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    check_warnings(proc.stderr, runs, hand_made, tmp_path)
    check_cells(pd.read_csv(out / "tables" / "cells.csv"), runs)
    assert "10 cells: 9 finished, 1 unknown" in (out / "REPORT.md").read_text()
    ids = {name: r.info.run_id for name, r in runs.items()}
    # a broken artifact loses its own rows only: the run's other tables are all there
    epochs = pd.read_parquet(out / "tables" / "epochs.parquet")
    no_epochs = {ids["relu-adam-d2-s0"], ids["sigmoid-sgd-d2-s0"]}
    assert set(epochs["run_id"]) == set(ids.values()) - no_epochs
    assert (epochs.groupby("run_id").size() == 3 * 6).all()  # 3 epochs × 6 metrics, each run whole
    steps = pd.read_parquet(out / "tables" / "steps.parquet")
    assert set(steps["run_id"]) == set(ids.values()) - {ids["relu-sgd-d2-s0"]}
    hist = pd.read_parquet(out / "tables" / "histograms.parquet")
    assert set(hist["run_id"]) == set(ids.values()) - {ids["sigmoid-adam-d2-s0"], ids[ABSENT]}
    signal = pd.read_parquet(out / "tables" / "signal.parquet")
    assert set(signal["run_id"]) == set(ids.values()) - {ids["sigmoid-adam-d4-s0"], ids[ABSENT]}


def test_a_store_listed_and_downloaded_as_a_remote_one_says_the_same(smoke_store, tmp_path, capsys):
    uri, client, runs = copy_store(smoke_store, tmp_path, listed=True)
    assert not runs[ABSENT].info.artifact_uri.startswith("file:")
    break_artifacts(tmp_path, runs)
    hand_made = add_hand_made(client, runs)
    s = from_store.load(uri, EXPERIMENT)
    check_warnings(capsys.readouterr().err, runs, hand_made, tmp_path)
    check_cells(s.cells, runs)
    assert s.epochs["run_id"].nunique() == 6 and s.steps["run_id"].nunique() == 7
    # the artifacts of a run cannot be listed: all of them are named at once, the run's row is kept
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("update runs set artifact_uri = 'nosuch:/x' where run_uuid = ?", (runs[ABSENT].info.run_id,))
    db.close()
    s = from_store.load(uri, EXPERIMENT)
    (line,) = [w for w in capsys.readouterr().err.splitlines() if ABSENT in w]
    assert line.startswith(
        f"warning: run {ABSENT} ({runs[ABSENT].info.run_id}): artifacts unreadable ("
    ) and line.endswith(ROWS_LOST)
    assert s.cells.set_index("run_name").loc[ABSENT, "unreadable"] == "artifacts"
    assert runs[ABSENT].info.run_id not in set(s.epochs["run_id"])


def test_a_whole_store_says_nothing(smoke_store, tmp_path, capsys):
    uri, _, runs = copy_store(smoke_store, tmp_path)
    for name in ("histograms.parquet", "signal.parquet", "diagnostics.parquet"):  # diagnostics=off
        artifact(tmp_path, runs[ABSENT], name).unlink()
    s = from_store.load(uri, EXPERIMENT)
    assert "warning" not in capsys.readouterr().err
    assert list(s.cells["unreadable"]) == [""] * 8 and s.epochs["run_id"].nunique() == 8
    assert s.steps["run_id"].nunique() == 7
