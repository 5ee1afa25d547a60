"""The experiment, and runs across processes: a sweep's cell reuses a FINISHED run of its
fingerprint, runs left RUNNING by processes that no longer exist end KILLED."""

from __future__ import annotations

import os
import platform
import sys

from mlflow.tracking import MlflowClient

from study import contract
from study.tracking.notes import EXPERIMENT_NOTE, NOTE
from study.tracking.store import _store_write, check_artifacts


def ensure_experiment(c: MlflowClient, name: str, artifacts: str | None) -> str:
    """The experiment's id (created if needed, with its description). An experiment's artifact
    folder is fixed when it is created: a new one is checked before (a bad location is never
    recorded), an existing one is checked with advice that fits, and a different `artifacts` asked
    for is said to be ignored."""
    with _store_write(c.tracking_uri, f"while recording experiment {name!r}"):
        exp = c.get_experiment_by_name(name)
        if exp is None:
            check_artifacts(artifacts)
            try:
                exp_id = c.create_experiment(name, artifact_location=artifacts)
            except Exception:  # created meanwhile by another process
                exp = c.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        if exp is not None:
            check_artifacts(
                exp.artifact_location,
                f"experiment {name!r} keeps the artifact folder it was created with: make that folder "
                "writable, or set tracking.experiment to a new experiment",
            )
            if artifacts and exp.artifact_location != artifacts:
                print(
                    f"experiment {name!r} keeps its artifacts in {exp.artifact_location} (fixed when it was "
                    f"created), not {artifacts}: tracking.artifact_location applies to new experiments",
                    file=sys.stderr,
                    flush=True,
                )
        if exp is None or exp.tags.get(NOTE) != EXPERIMENT_NOTE:
            c.set_experiment_tag(exp_id, NOTE, EXPERIMENT_NOTE)
    return exp_id


def _alive(pid: int) -> bool:
    """A process with this pid runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_killed(c: MlflowClient, run_id: str) -> None:
    """End a run KILLED, tagged as such."""
    for key, value in contract.killed_tags().items():
        c.set_tag(run_id, key, value)
    c.set_terminated(run_id, "KILLED")


def close_stale(c: MlflowClient, experiment_id: str) -> int:
    """Runs (sweep parents and cells) left RUNNING by a process of this machine that no longer
    exists, e.g. a sweep killed with SIGKILL, end KILLED with `outcome=killed`. Runs of other
    machines, and of processes still alive, are left alone. Returns how many were closed."""
    here, closed = platform.node(), 0
    for r in c.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=50000):
        pid = r.data.tags.get(contract.PID)
        if (
            r.data.tags.get(contract.HOST) != here
            or not (pid or "").isdigit()
            or _alive(int(pid))
            or int(pid) == os.getpid()
        ):
            continue
        end_killed(c, r.info.run_id)
        closed += 1
    if closed:
        print(f"closed {closed} run(s) left RUNNING by a process that no longer exists (now KILLED)", flush=True)
    return closed


def resume(c: MlflowClient, experiment_id: str, fingerprint: str, sweep_id: str):
    """Before a sweep cell trains: runs of the same fingerprint left RUNNING by a killed sweep are
    marked KILLED; a FINISHED one is returned (and tagged as part of this sweep) to be reused."""
    prior = c.search_runs(
        [experiment_id],
        contract.fingerprint_query(fingerprint),
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    for r in prior:
        if r.info.status == "RUNNING":
            end_killed(c, r.info.run_id)
    done = next((r for r in prior if r.info.status == "FINISHED"), None)
    if done is not None:
        c.set_tag(done.info.run_id, f"{contract.REUSED}.{sweep_id}", "1")
    return done
