"""MLflow tracking: stores, experiments, runs, params, batched metrics, artifacts, fingerprints.

Everything goes through an explicit `MlflowClient(uri)` (no global fluent state), so several stores
can be used in one process and tests point runs at a temporary SQLite file. One module per concern:
`store` (clients, checks of stores and artifact folders, waiting for a lost server), `redaction`
(credentials hidden), `provenance` (flattened config, fingerprint, commit, versions, device),
`resume` (the experiment; reusing FINISHED cells, ending runs of dead processes KILLED),
`run_logger` (RunLogger), `notes` (the MLflow UI's descriptions). Their names are re-exported here.
"""

from study.tracking.notes import EXPERIMENT_NOTE, NOTE, PROGRESS_EVERY, cell_note, sweep_note, sweep_progress
from study.tracking.provenance import (
    ADDED_KEYS,
    NON_SEMANTIC,
    cpu,
    environment_tags,
    fingerprint,
    flatten,
    git_commit,
    machine,
    source_tags,
)
from study.tracking.redaction import RedactFilter, redact, redact_files
from study.tracking.resume import close_stale, end_killed, ensure_experiment, resume
from study.tracking.run_logger import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, RunLogger
from study.tracking.store import (
    NEW_STORE_BYTES,
    PROBE_BYTES,
    REPO_ROOT,
    SQLITE_HEADER,
    TrackingError,
    artifact_location,
    check_artifacts,
    check_sqlite,
    check_store,
    client,
    default_uri,
    shown_uri,
    sqlite_path,
    wait_for_store,
)

__all__ = [
    "ADDED_KEYS",
    "EXPERIMENT_NOTE",
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_PER_BATCH",
    "NEW_STORE_BYTES",
    "NON_SEMANTIC",
    "NOTE",
    "PROGRESS_EVERY",
    "PROBE_BYTES",
    "REPO_ROOT",
    "SQLITE_HEADER",
    "RedactFilter",
    "RunLogger",
    "TrackingError",
    "artifact_location",
    "cell_note",
    "check_artifacts",
    "check_sqlite",
    "check_store",
    "client",
    "close_stale",
    "cpu",
    "default_uri",
    "end_killed",
    "ensure_experiment",
    "environment_tags",
    "fingerprint",
    "flatten",
    "git_commit",
    "machine",
    "redact",
    "redact_files",
    "resume",
    "shown_uri",
    "source_tags",
    "sqlite_path",
    "sweep_note",
    "sweep_progress",
    "wait_for_store",
]
