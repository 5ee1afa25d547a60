"""The descriptions the MLflow UI shows (`mlflow.note.content`): of the experiment, of a sweep's
parent run and of a cell."""

from __future__ import annotations

import re

from study import contract, verdicts

NOTE = "mlflow.note.content"  # MLflow's description of an experiment or run (shown in its UI)
EXPERIMENT_NOTE = """**Activation × optimizer × depth: when do CNN gradients vanish or explode?**

Each parent run (tag `role=sweep`, named `<preset>-<sweep id>`) is one sweep; its child runs (tag
`role=cell`, named `<activation>-<optimizer>-d<depth>-s<seed>`) are the grid's cells. Open a run for
its accuracy (`test/accuracy`), its gradient verdict and the numbers behind it (tags
`gradient_verdict`, `verdict_reason`), per-layer gradient statistics (`grad/<layer>/rms`) and the
verdict's evidence (`diag/*`); its own figures are artifacts `figures/curves.png`, `gradients.png`
and `signal.png`. A sweep's report (after `make report`) is its parent run's artifact
`report/report.html` (the whole report, figures included), beside `report/REPORT.md`.

In the runs table: expand a sweep (the ⊞ beside its name) to list its cells; "Columns" adds params and
metrics; in the chart view, choose "Show all runs" (charts show the first 10 by default).

Verdicts (progress P = the larger of 1 - final val loss / ln K and (val accuracy - c) / (1 - c),
c the majority class's share of the validation set): `diverged` (loss non-finite), `exploding`
(non-finite or fast-growing gradients, or loss above {t.blowup_above:g} ln K), `healthy`
(P >= {t.progress_healthy:g}), `slow` ({t.progress_min:g} <= P < {t.progress_healthy:g}), and for
nets that did not learn, a bad start named by the tag `init_finding` (at initialisation: `collapsed`,
forward signal last/first layer < {t.collapse_below:g}; `vanishing`, first/last weight-gradient
ratio < {t.vanishing_below:g}; `exploding`, ratio > {t.exploding_above:g}), `died` (no pathology at
init, or progress first, then collapsed, vanishing, dead or frozen by the end), `stalled` (none).

Filters: ``metrics.`test/accuracy` > 0.5``, `params.model.depth = '16'`, `tags.gradient_verdict = 'collapsed'`.
""".format(t=verdicts.Thresholds())  # the numbers are the verdict defaults, not a copy


def sweep_note(config, name: str, cells: list | None, state: str) -> str:
    """The parent run's description in the MLflow UI: preset, grid, state, where the report is."""
    params = config.hydra.sweeper.get("params") or {}
    grid = "; ".join(f"`{k}` {v}" for k, v in params.items()) or "the command line's values"
    question = f"**Question.** {config.question}\n\n" if config.get("question") else ""
    return (
        f"**Sweep of preset `{name}`**: {len(cells) if cells is not None else '?'} cells over {grid}.\n\n"
        + question
        + f"Sweep {state}\n\nThe child runs are its cells; each holds its own figures (artifacts `figures/`). "
        "Its report (after `make report`): artifact `report/report.html` of this run (the whole report, "
        "figures included), beside `report/REPORT.md`, `report/figures/` and `report/tables/`."
    )


PROGRESS_EVERY = 5  # a sweep's description shows its progress, updated as every 5th cell starts


def sweep_progress(note: str, where: str) -> str:
    """The running sweep's description with its progress (`[cell i/N] (elapsed, ETA)`) in place of
    the state line that `sweep_note(..., "running")` wrote; unchanged if that line is not there."""
    return re.sub(r"^Sweep running[^\n]*", lambda _: f"Sweep running: {where.strip()}", note, count=1, flags=re.M)


def cell_note(cfg, result: dict, lr: float) -> str:
    """The cell's description in the MLflow UI: what it trained and what came out."""
    return (
        f"**{cfg.model.activation} + {cfg.optimizer.name}, depth {cfg.model.depth}, seed {cfg.seed}** "
        f"({cfg.model.init} init, learning rate {lr:g}, batch {cfg.train.batch_size}, "
        f"{cfg.train.epochs} epochs on {cfg.data.name}).\n\n"
        f"Outcome `{result[contract.OUTCOME]}`: test accuracy {result['test/accuracy']:.4f}, test loss "
        f"{result['test/loss']:.4g}, in {result['time/wall_s']:.1f} s.\n\n"
        f"Gradient verdict **{result[contract.VERDICT]}**: {result[contract.VERDICT_REASON]}."
    )
