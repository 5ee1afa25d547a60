"""Build a sweep's report: tables, figures (PNG + PDF), REPORT.md, logged to the parent run."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from study import contract, outputs, tracking, verdicts
from study.report import baseline as base_cells
from study.report import collect, from_store, sections, stats, style
from study.report.md import fmt, md_table


def _when(ms) -> str:
    return "n/a" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


SUMMARY_COLUMNS = (
    "runs", "n", "k", "k_low", "k_high", "split", "mean", "sd", "ci_low", "ci_high",
    "mean_trained", "trained_ci_low", "trained_ci_high",
)  # fmt: skip


def summary_table(summ: pd.DataFrame) -> str:
    """Markdown: one row per cell, its seeds' test accuracy by stats.py's rules: mean and 95 % t
    interval where the seeds agree, `k/n trained` with the Clopper-Pearson interval where they split."""
    keys = [k for k in summ.columns if k not in SUMMARY_COLUMNS]
    rows = []
    for _, r in summ.iterrows():
        trained = f"{int(r['k'])}/{r['n']}" if np.isfinite(r["k"]) else "n/a"
        rows.append((*(r[k] for k in keys), r["runs"], trained, stats.fmt(r)))
    return md_table([*keys, "runs", "trained", "test accuracy (stats.py rules 1-2)"], rows)


def _paired_section(pairs: pd.DataFrame) -> list[str]:
    """REPORT.md: each new cell against each baseline optimizer at its arm and depth, paired by seed."""
    lines = [
        "## Paired by seed against the baseline",
        "",
        "Cells of one arm, depth and seed start from the same weights, so each new cell is compared with "
        "each baseline optimizer seed by seed: the per-seed differences of test accuracy (new − baseline), "
        "how many are above and below zero, and a two-sided test by `study/report/stats.py` rule 3: the paired "
        "t test, the exact sign test where a cell's seeds split, none where neither cell trained in any seed "
        "(`tables/paired.csv`). A difference is called resolved where p < 0.05.",
        "",
    ]
    rows = []
    for r in pairs.itertuples():
        resolved = "yes" if r.resolved else "no" if r.p == r.p else "n/a"
        said = (r.activation, r.depth, r.new, r.baseline, r.differences, f"{r.above} / {r.below}", r.test, fmt(r.p, 2))
        rows.append((*said, resolved))
    header = ["arm", "depth", "new", "baseline", "differences", "above / below", "test", "p", "resolved"]
    return [*lines, md_table(header, rows), ""]


NOT_DRAWN = 3  # exit code of a drawing process whose figure has no data


FORMATS = ("png", "pdf")  # every figure in each; REPORT.md and report.html show the PNGs


def _render(name: str, make, folder: Path, formats: tuple[str, ...] = FORMATS) -> bool:
    """Draw one figure and save it in `formats` (PNG first); False when it has no data."""
    fig = make()
    if fig is None:
        return False
    for ext in formats:
        fig.savefig(folder / f"{name}.{ext}", metadata={"CreationDate": None} if ext == "pdf" else None)
    plt.close(fig)
    return True


def _render_child(name: str, make, folder: Path, formats: tuple[str, ...]) -> None:
    """`_render` in a forked process, its answer as the exit code (NOT_DRAWN without data)."""
    raise SystemExit(0 if _render(name, make, folder, formats) else NOT_DRAWN)


def draw(
    plan: list[tuple[str, object]], folder: Path, workers: int = 2, formats: tuple[str, ...] = FORMATS
) -> list[bool]:
    """Draw (name, make) figures, `workers` forked processes at a time (a fork shares the tables
    without pickling them), or with `workers` 1 one after the other in this process; returns which
    were drawn. A figure that fails raises, naming it."""
    if workers <= 1:
        drawn = []
        for name, make in plan:
            try:
                drawn.append(_render(name, make, folder, formats))
            except Exception as err:
                raise RuntimeError(f"figure {name!r} failed: {err}") from err
        return drawn
    ctx = multiprocessing.get_context("fork")
    drawn = []
    for start in range(0, len(plan), max(1, workers)):
        procs = [
            (name, ctx.Process(target=_render_child, args=(name, make, folder, formats)))
            for name, make in plan[start : start + workers]
        ]
        for _, p in procs:
            p.start()
        for name, p in procs:
            p.join()
            if p.exitcode not in (0, NOT_DRAWN):
                raise RuntimeError(f"figure {name!r} failed (exit code {p.exitcode}; traceback above)")
            drawn.append(p.exitcode == 0)
    return drawn


def build(
    uri: str,
    experiment: str,
    sweep_id: str | None,
    out: str | None,
    *,
    depth: int | None = None,
    optimizer: str | None = None,
    log_to_run: bool = True,
    thresholds: verdicts.Thresholds | None = None,
    run_ids: list[str] | None = None,
    single: bool = False,
    workers: int = 2,
    formats: tuple[str, ...] = FORMATS,
    folder: str | None = None,
    baseline: str | None = None,
) -> Path:
    """Tables, figures and REPORT.md of a sweep (or of runs without one: `run_ids`, or with `single`
    every single run), written to `out` (default reports/<preset>-<sweep id>/). With `folder`, from
    a report folder's own tables instead of the store (default `out`: that folder, redrawn). With
    `baseline`, a committed report folder whose matching cells are drawn beside this sweep's."""
    th = thresholds or verdicts.Thresholds()
    out = out or folder
    if out:  # before reading anything: a folder it may not write fails at once
        outputs.check_target(Path(out))
    if folder:
        s, log_to_run = collect.from_folder(folder, th), False
    else:
        s = from_store.load(uri, experiment, sweep_id, th, run_ids=run_ids, single=single)
    if baseline:  # the committed baseline's matching cells beside this sweep's (study/report/baseline.py)
        s = base_cells.merge(s, collect.from_folder(baseline, th), baseline)
    name = f"{s.info.get(contract.PRESET) or 'sweep'}-{s.info[contract.SWEEP_ID]}"
    final_dir = Path(out or tracking.REPO_ROOT / "reports" / name)
    # written in a temporary sibling folder and swapped in at the end: never a half report, and
    # never in place of a folder the report did not make (study/outputs.py)
    with outputs.replace_folder(final_dir, "scripts/make_report.py") as out_dir:
        _write(s, out_dir, depth, optimizer, th, min(workers, os.cpu_count() or 1), formats)
    if log_to_run and s.info.get("parent_run_id"):
        tracking.client(uri).log_artifacts(s.info["parent_run_id"], str(final_dir), "report")
    return final_dir


def _write(
    s: collect.Sweep, out_dir: Path, depth, optimizer, th: verdicts.Thresholds, workers: int, formats=FORMATS
) -> None:
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    summ, pairs = _write_tables(s, out_dir)
    c = s.cells
    view = sections.View(th, _default_depth(c, depth), sections.grid.pick(c["optimizer"].unique(), optimizer or "sgd"))
    sec = sections.section(s, view)
    parts, skipped = _draw_figures(sec, c, fig_dir, workers, formats)
    text = _markdown(s, sec, th, summ, pairs, parts, skipped)
    (out_dir / "REPORT.md").write_text(text)
    write_html(out_dir, f"Report of {s.info[contract.SWEEP_ID]}")


def _write_tables(s: collect.Sweep, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """tables/: metadata, cells, summary over seeds, pairs against a baseline, the tidy tables."""
    tables = out_dir / "tables"
    tables.mkdir(exist_ok=True)
    (tables / collect.META).write_text(json.dumps(s.info, indent=1, sort_keys=True, default=str) + "\n")
    pairs = base_cells.paired(s.cells) if "source" in s.cells else None
    if pairs is not None:
        pairs.to_csv(tables / "paired.csv", index=False)
    s.cells.to_csv(tables / "cells.csv", index=False)  # every digit: the folder alone rebuilds the same report
    summ = stats.summary(s.cells, extra=collect.extra_axes(s.cells))
    summ.to_csv(tables / "summary.csv", index=False, float_format="%.6g")
    if s.cells["optimizer"].astype(str).nunique() > 1:  # optimizers of one arm share each seed's weights
        contrasts = stats.contrasts(s.cells, extra=collect.extra_axes(s.cells))
        if not contrasts.empty:  # one seed each, or no cell shares another's weights: nothing to pair
            contrasts.drop(columns="text").to_csv(tables / "contrasts.csv", index=False, float_format="%.6g")
    for name, df in s.tables().items():
        if name != contract.CURVATURE or not df.empty:  # curvature.parquet when diagnostics.curvature was on
            df.to_parquet(tables / contract.parquet(contract.REPORT_TABLES[name]), index=False)
    return summ, pairs


def _default_depth(c: pd.DataFrame, depth: int | None) -> int | None:
    """The depth asked for, else the deepest with results, else the deepest planned."""
    ran = c[c[contract.OUTCOME].isin(contract.RAN)]  # default: the deepest depth with results
    return depth or (
        int(ran["depth"].max())
        if ran["depth"].notna().any()
        else int(c["depth"].max())
        if c["depth"].notna().any()
        else None
    )


def _draw_figures(sec, c: pd.DataFrame, fig_dir: Path, workers: int, formats) -> tuple[list[str], list[str]]:
    """The section's figures drawn; REPORT.md's part for each drawn one, a line for each skipped."""
    plan, caps = [(f.name, f.title, f.make) for f in sec.figures], {f.name: f.caption for f in sec.figures}
    style.style()
    drawn = draw([(name, make) for name, _, make in plan], fig_dir, workers, formats)
    parts, skipped = [], []
    for (name, title, _), done in zip(plan, drawn):
        if not done:
            skipped.append(
                f"- {title}: skipped, the sweep has no data for it (diagnostics level "
                f"{', '.join(sorted(set(c['diagnostics'].dropna()))) or 'unknown'}; needs `diagnostics=full` "
                "for activation statistics and histograms, `default` for gradient statistics)."
            )
            continue
        parts.append(f"### {title}\n\n![{title}](figures/{name}.png)\n\n{caps.get(name, '')}\n")
    return parts, skipped


def _metadata(s: collect.Sweep, sec) -> list[str]:
    """REPORT.md's opening lines: what was reported, when, from which code, how to regenerate it."""
    c = s.cells
    counts = c[contract.OUTCOME].value_counts().sort_index()
    i = s.info
    if i.get("parent_run_id"):
        what = f"sweep `{i[contract.SWEEP_ID]}` (preset `{i.get(contract.PRESET, '?')}`)"
        select = f"--sweep {i[contract.SWEEP_ID]}"
    else:
        what = f"{len(i['run_ids'])} run(s) without a sweep"
        select = " ".join(f"--run {r}" for r in i["run_ids"]) if i[contract.PRESET] == "runs" else "--single"
    meta = [
        f"- {what}, experiment `{i['experiment']}`, store `{i['tracking_uri']}`",
        f"- started {_when(i.get('start_time'))}, ended {_when(i.get('end_time'))}, wall time "
        f"{fmt(i.get('sweep/wall_time_s'), 4)} s",
        f"- git commit `{i.get(contract.GIT_COMMIT, '?')}`; TensorFlow {i.get(contract.TF_VERSION, '?')}, "
        f"Keras {i.get(contract.KERAS_VERSION, '?')}, Python {i.get(contract.PYTHON_VERSION, '?')}; "
        f"device {i.get(contract.DEVICE, '?')}" + (f", {i[contract.CPU]}" if i.get(contract.CPU) else ""),
        f"- {len(c)} cells: " + ", ".join(f"{n} {o}" for o, n in counts.items()),
        *(
            [
                "- runs with unreadable data (missing from some tables and figures; `unreadable` in "
                "tables/cells.csv): " + ", ".join(f"`{n}` ({u})" for n, u in zip(c["run_name"], c["unreadable"]) if u)
            ]
            if "unreadable" in c and (c["unreadable"] != "").any()
            else []
        ),
        f"- regenerate: from this folder alone, `make report FROM=<this folder>` (`python scripts/make_report.py "
        f"--from <this folder>`); from the store, `python scripts/make_report.py --tracking-uri <the store "
        f'holding these runs> {select}` (or `make report URI=<store> REPORT_ARGS="{select}"`)',
    ]
    if str(i.get(contract.GIT_COMMIT, "")).endswith("-dirty"):
        meta.insert(
            0,
            f"> **Warning: {'this sweep' if i.get('parent_run_id') else 'the newest of these runs'} ran from a "
            f"working tree with uncommitted changes** (git commit `{i[contract.GIT_COMMIT]}`): its code cannot be "
            "recovered exactly from the repository.\n",
        )
    meta += sec.notes
    if i.get("baseline"):
        n_base = int((c["source"] == "baseline").sum())
        meta.append(
            f"- beside baseline `{i['baseline']}` (sweep {i.get('baseline_sweep_id')}): its {n_base} cells with an "
            "arm, depth and seed of this sweep, `source=baseline` in the tables; paired by seed below"
            + (
                f"; this sweep's optimizer labels end in its value of `{i['baseline_marked']}` in brackets"
                if i.get("baseline_marked")
                else ""
            )
        )
    return meta


def _markdown(s: collect.Sweep, sec, th, summ: pd.DataFrame, pairs, parts: list[str], skipped: list[str]) -> str:
    c, i, meta = s.cells, s.info, _metadata(s, sec)
    question = sections.question(i)
    text = "\n".join(
        [
            f"# Report of {'sweep' if i.get('parent_run_id') else 'runs'} {i[contract.SWEEP_ID]}",
            "",
            *meta,
            "",
            *([f"**Question.** {question}", ""] if question else []),
            "## Figures",
            "",
            *parts,
            *(["## Skipped figures", "", *skipped, ""] if skipped else []),
            "## Gradient verdict per cell",
            "",
            "Recomputed by this report from each run's recorded evidence (rules: README \"Gradient "
            'verdict", `study/verdicts.py`), with thresholds '
            + ", ".join(f"{k} {v:g}" for k, v in th.__dict__.items())
            + ". Verdicts: "
            + sections.verdict_counts(c)
            + ".",
            "",
            *(
                [
                    "## Mean over seeds",
                    "",
                    "Test accuracy per cell over its seeds that finished or diverged (n): where every seed "
                    "trained, or none did, the mean and the 95 % Student-t interval of that mean, clipped to "
                    "[0, 1]; where the seeds split, `k/n trained` with the exact (Clopper-Pearson) 95 % interval "
                    "of that fraction and the mean of the seeds that trained (`tables/summary.csv`; "
                    "`study/report/stats.py` gives the rules and why t, not a bootstrap). Cells that share their "
                    "seeds' initial weights are compared paired by seed; other cells are called apart only "
                    "where their two intervals do not overlap.",
                    "",
                    summary_table(summ),
                    "",
                ]
                if (summ["n"] > 1).any()
                else []
            ),
            *(_paired_section(pairs) if pairs is not None else []),
            *[line for table in sec.tables for line in (table, "")],
            "Tables: `tables/cells.csv` (one row per run), `tables/summary.csv` (one row per cell: n, mean, "
            "standard deviation and 95 % t interval of the test accuracy over seeds), `tables/epochs.parquet`, "
            "`tables/steps.parquet` "
            f"(step-level diagnostics, {collect.STEP_POINTS} evenly spaced steps per run), "
            "`tables/histograms.parquet`, `tables/signal.parquet`"
            + (
                ", `tables/curvature.parquet` (the Hessian's `curv/*` per measured step)."
                if not s.curvature.empty
                else "."
            ),
            "",
        ]
    )
    return text


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 0.2em; }
blockquote { border-left: 4px solid #d33; margin-left: 0; padding-left: 1em; }
"""


def write_html(out_dir: Path, title: str) -> Path:
    """`report.html`: REPORT.md as one self-contained page, its figures embedded as data URIs and
    its tables as HTML, so that MLflow's artifact viewer (or any browser) shows the whole report."""
    import base64
    import html
    import re

    import markdown

    body = markdown.markdown((out_dir / "REPORT.md").read_text(), extensions=["tables", "sane_lists"])

    def embed(m: re.Match) -> str:
        png = (out_dir / html.unescape(m.group(1))).read_bytes()
        return f'src="data:image/png;base64,{base64.b64encode(png).decode()}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', embed, body)
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page)
    return path
