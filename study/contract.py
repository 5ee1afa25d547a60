"""The contract between the runner (study/train.py, study/sweep.py, study/tracking/) and the report
(study/report/): tag keys and values, outcomes, table and artifact names, derived params, metric-name
builders and the queries that find a sweep's runs. Both sides import these names; docs/recorded.md
documents each (tests/test_imports.py checks that it does), and tests/test_contract.py fails on a tag
key, table name, derived param or `tags.` query spelled outside this module.
"""

from __future__ import annotations

# tag keys
ROLE = "role"
SWEEP_ID = "sweep_id"
CELL_INDEX = "cell_index"
PRESET = "preset"
QUESTION = "question"  # on the parent run: the preset's question, from its YAML
CRITERIA = "criteria"  # on the parent run: the preset's decision rules (JSON), fixed before running
FINGERPRINT = "fingerprint"
OUTCOME = "outcome"
VERDICT = "gradient_verdict"
VERDICT_REASON = "verdict_reason"
INIT_FINDING = "init_finding"  # what was wrong at initialisation: none, vanishing, collapsed, exploding
ERROR = "error"
GIT_COMMIT = "git_commit"
REUSED = "reused_in"  # `reused_in.<sweep id>` = 1 on a FINISHED run a later sweep skipped as done
OVERRIDES = "overrides"  # on the parent run: the sweep's command-line overrides (JSON list), as typed
# overrides that say where a sweep ran, not what it trained (dropped to rerun or compare it)
WHERE = ("tracking.uri", "tracking.artifact_location", "tracking.experiment", "hydra.", "hydra/")
LAUNCH = "launch_overrides"  # on the parent run: its Hydra overrides (launcher, sweeper), JSON list
# where a run ran (tracking.environment_tags): versions, device, and the process (close_stale reads
# `host` and `pid` to end the runs of processes that no longer exist)
TF_VERSION, KERAS_VERSION, PYTHON_VERSION = "tensorflow_version", "keras_version", "python_version"
DEVICE, CPU, HOST, PID = "device", "cpu", "host", "pid"
ENVIRONMENT = (GIT_COMMIT, TF_VERSION, KERAS_VERSION, PYTHON_VERSION, DEVICE, CPU, HOST, PID)
TAGS = (
    ROLE,
    SWEEP_ID,
    CELL_INDEX,
    PRESET,
    QUESTION,
    CRITERIA,
    FINGERPRINT,
    OUTCOME,
    VERDICT,
    VERDICT_REASON,
    INIT_FINDING,
    ERROR,
    GIT_COMMIT,
    REUSED,
    OVERRIDES,
    LAUNCH,
    *ENVIRONMENT[1:],
)

# values of `role`
SWEEP, CELL, SINGLE = "sweep", "cell", "single"
ROLES = (SWEEP, CELL, SINGLE)

# values of `outcome` (`running` while a run trains; the report adds `missing` for planned cells
# that never ran)
FINISHED, DIVERGED, FAILED, KILLED, RUNNING = "finished", "diverged", "failed", "killed", "running"
OUTCOMES = (FINISHED, DIVERGED, FAILED, KILLED)
RAN = (FINISHED, DIVERGED)  # cells with results: a diverged run is a result

# artifacts of a cell run, and of the sweep's parent run
CONFIG_ARTIFACT = "config.yaml"
# a cell's tables, artifacts `<name>.parquet`; a report keeps each as `tables/<report name>.parquet`
EPOCHS, DIAGNOSTICS, SIGNAL, HISTOGRAMS, CURVATURE = "epochs", "diagnostics", "signal", "histograms", "curvature"
TABLES = (EPOCHS, DIAGNOSTICS, SIGNAL, HISTOGRAMS, CURVATURE)
# the report's name of each table: the per-step table of every cell is `steps` in a report (a
# cell's `diagnostics.parquet`, concatenated over cells and subsampled)
STEPS = "steps"
REPORT_TABLES = {t: STEPS if t == DIAGNOSTICS else t for t in TABLES}


def parquet(table: str) -> str:
    """The file name of a table, e.g. `epochs.parquet`."""
    return f"{table}.parquet"


TRACEBACK_ARTIFACT = "traceback.txt"
GRID_ARTIFACT = "grid.json"
REPORT_FOLDER = "report"
ARTIFACTS = (CONFIG_ARTIFACT, *map(parquet, TABLES), TRACEBACK_ARTIFACT, GRID_ARTIFACT)

# metric families: per weight layer L `grad/L/<stat>`, `weight/L/<stat>`; per activation output
# `backprop/L/l2`, `act/L/<stat>`; model-wide `grad/global_norm`, `grad/nonfinite`
GRAD, WEIGHT, BACKPROP, ACT = "grad", "weight", "backprop", "act"
METRIC_GROUPS = (GRAD, WEIGHT, BACKPROP, ACT)
GLOBAL_NORM, NONFINITE_GRADS = f"{GRAD}/global_norm", f"{GRAD}/nonfinite"  # model-wide, every step
# model-wide families: `curv/<stat>` (diagnostics.curvature), `newton/<stat>` (optimizer=newton)
MODEL_GROUPS = ("curv", "newton")


# params derived from the config when a cell starts (beside the flattened config)
BATCH_SIZE_RESOLVED = "train.batch_size_resolved"
STEPS_PER_EPOCH = "train.steps_per_epoch"
LEARNING_RATE_EFFECTIVE = "optimizer.learning_rate_effective"  # learning rate x lr_scale
NUM_CLASSES = "data.num_classes"
DERIVED_PARAMS = (BATCH_SIZE_RESOLVED, STEPS_PER_EPOCH, LEARNING_RATE_EFFECTIVE, NUM_CLASSES)


def layer_metric(group: str, layer: str, stat: str) -> str:
    """The MLflow metric name of a per-layer statistic, e.g. `grad/conv_03/rms`."""
    return f"{group}/{layer}/{stat}"


def sweeps_query(sweep_id: str | None = None) -> str:
    """MLflow filter: the parent runs of sweeps (one sweep when `sweep_id` is given)."""
    return f"tags.{ROLE} = '{SWEEP}'" + (f" and tags.{SWEEP_ID} = '{sweep_id}'" if sweep_id else "")


def cells_query(sweep_id: str) -> str:
    """MLflow filter: the cells a sweep trained."""
    return f"tags.{SWEEP_ID} = '{sweep_id}' and tags.{ROLE} = '{CELL}'"


def reused_query(sweep_id: str) -> str:
    """MLflow filter: the FINISHED runs of earlier sweeps that this sweep reused instead of training."""
    return f"tags.`{REUSED}.{sweep_id}` = '1'"


def running_query(sweep_id: str) -> str:
    """MLflow filter: a sweep's runs (parent and cells) still RUNNING."""
    return f"tags.{SWEEP_ID} = '{sweep_id}' and attributes.status = 'RUNNING'"


def fingerprint_query(fingerprint: str) -> str:
    """MLflow filter: the cells (of any sweep) trained with this config fingerprint."""
    return f"tags.{FINGERPRINT} = '{fingerprint}' and tags.{ROLE} = '{CELL}'"


def singles_query() -> str:
    """MLflow filter: runs trained without a sweep (`python -m study.train` without -m)."""
    return f"tags.{ROLE} = '{SINGLE}'"


def all_cells_query() -> str:
    """MLflow filter: every cell of every sweep."""
    return f"tags.{ROLE} = '{CELL}'"


def killed_tags() -> dict[str, str]:
    """The tags that mark a run ended KILLED (with `set_terminated(run_id, "KILLED")`)."""
    return {OUTCOME: KILLED}
