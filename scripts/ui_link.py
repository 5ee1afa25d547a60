"""Print the link that opens the study's runs table in the MLflow UI (used by `make ui`).

MLflow 3 opens an experiment on its GenAI overview; `workflowType=machine_learning` opens the runs.
"""

from __future__ import annotations

import argparse

from study import tracking


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tracking-uri", default=tracking.default_uri())
    p.add_argument("--experiment", default="activation-study")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default="5000")
    a = p.parse_args()
    path = tracking.sqlite_path(a.tracking_uri)
    exp = None
    if path is None or path.exists():
        exp = tracking.client(a.tracking_uri).get_experiment_by_name(a.experiment)
    base = f"http://{a.host}:{a.port}/"
    if exp is None:
        print(f"MLflow UI: {base} (no experiment {a.experiment!r} in this store yet: run `make smoke`)")
        return
    print(f"Runs of {a.experiment!r}: {base}#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
    print(
        'In the runs table: "Columns" to add params and metrics; in the chart view, "Show all runs" '
        "(charts show the first 10 by default)."
    )
    print(
        'Click "Model training" (top left, next to "GenAI") once: this browser then opens experiments on '
        "their runs and keeps a clicked run in the training view (the link's workflowType does not carry over)."
    )


if __name__ == "__main__":
    main()
