"""A run's table artifacts as the report reads them: an absent one is expected (a failed or killed
cell, a lower diagnostics level) and says nothing; one that exists but cannot be used (truncated,
corrupt, a folder, other columns) is named in a `warning:` line on stderr and in the cells table's
`unreadable` column, and the rest of the run is still reported (study/report/collect.py).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
from mlflow.tracking import MlflowClient

from study import contract

# the columns of each table artifact that the report uses (study/callbacks.py writes them), and
# those of them that hold numbers
COLUMNS = {
    contract.EPOCHS: ("epoch", "metric", "value"),
    contract.DIAGNOSTICS: ("step", "epoch", "group", "layer", "layer_index", "stat", "value"),
    contract.SIGNAL: ("phase", "layer", "layer_index", "stat", "value"),
    contract.HISTOGRAMS: ("epoch", "quantity", "layer", "layer_index", "bin_left", "bin_right", "count"),
    contract.CURVATURE: ("step", "stat", "value"),
}
NUMBERS = ("step", "epoch", "layer_index", "value", "bin_left", "bin_right", "count")


def problem(err: BaseException, path=None, name: str = "") -> str:
    """`ErrorType: first line of the message`, short, without this machine's path."""
    text = (str(err).strip().splitlines() or [""])[0]
    text = text.replace(str(path), name) if path is not None else text
    return f"{type(err).__name__}: {text[:157] + '...' if len(text) > 160 else text}"


def parquet(path, name: str) -> pd.DataFrame:
    """One table artifact, with the columns the report uses (a folder of that name, a file that does
    not parse or lacks them raises)."""
    if Path(path).is_dir():
        raise IsADirectoryError("a folder, not a parquet file")
    df = pd.read_parquet(path)
    if len(df):
        lacking = [col for col in COLUMNS[name] if col not in df]
        if lacking:
            raise ValueError(f"no column {', '.join(lacking)}")
        text = [col for col in COLUMNS[name] if col in NUMBERS and not pd.api.types.is_numeric_dtype(df[col])]
        if text:
            raise TypeError(f"column {', '.join(text)} not numeric")
    return df


def run_tables(c: MlflowClient, uri: str, run_id: str, artifact_uri: str, tmp: str) -> tuple[dict, dict]:
    """A run's table artifacts (contract.TABLES) by name, and by artifact name why each one that
    exists could not be used. An absent artifact is expected (a failed, killed or still running
    cell, or a lower diagnostics level): neither. A local artifact store is read in place (one
    existence check per file); any other is listed once per run, then downloaded."""
    tables, problems = {}, {}
    if artifact_uri.startswith("file:"):
        root = Path(unquote(urlparse(artifact_uri).path))
        present = {contract.parquet(t) for t in contract.TABLES if (root / contract.parquet(t)).exists()}
    else:
        try:
            present = {f.path for f in c.list_artifacts(run_id)}
        except Exception as err:
            return {}, {"artifacts": problem(err)}
    for t in contract.TABLES:
        name = contract.parquet(t)
        if name not in present:
            continue
        path = None
        try:
            if artifact_uri.startswith("file:"):
                path = root / name
            else:
                from mlflow.artifacts import download_artifacts

                path = download_artifacts(
                    artifact_uri=f"{artifact_uri}/{name}", dst_path=tempfile.mkdtemp(dir=tmp), tracking_uri=uri
                )
            tables[t] = parquet(path, t)
        except Exception as err:
            problems[name] = problem(err, path, name)
    return tables, problems


def warn(cells: pd.DataFrame, problems: dict[str, dict[str, str]]) -> None:
    """One `warning:` line on stderr per run (in the cells table's order) and unreadable artifact,
    param or metric."""
    for rid, name in zip(cells["run_id"], cells["run_name"]):
        for what, why in problems.get(rid, {}).items():
            lost = "its value is" if ":" in what else "its rows are"  # params:/metrics: or an artifact
            print(
                f"warning: run {name} ({rid}): {what} unreadable ({why}); {lost} missing from the report",
                file=sys.stderr,
            )
    sys.stderr.flush()
