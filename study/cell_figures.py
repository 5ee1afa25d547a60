"""Small PNG figures of one cell, logged on its run (`figures/`), so that opening a run in the MLflow
UI tells its story: the learning curves, the weight-gradient profile across layers at
initialisation and in the last epoch, and the signal through depth at initialisation and at the end.

Drawn from the tables the cell already keeps (no extra pass over the data), with matplotlib's
object API (no pyplot state shared between cells of one process).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from study import contract

SIZE, DPI = (7.0, 2.8), 100


def _png(fig: Figure, left: float = 0.1, bottom: float = 0.17) -> bytes:
    """Fixed margins: a tight or constrained layout would draw the figure twice."""
    fig.subplots_adjust(left=left, right=0.98, top=0.88, bottom=bottom, wspace=0.32)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _positive(values) -> np.ndarray:
    v = np.asarray(values, dtype="float64")
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def curves(epochs: pd.DataFrame, title: str, test: dict[str, float]) -> bytes:
    """Loss and accuracy per epoch, training and validation; the test values as dotted lines."""
    fig = Figure(figsize=SIZE)
    for ax, what in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for split, style in (("train", "-o"), ("val", "--s")):
            e = epochs[epochs["metric"] == f"{split}/{what}"].sort_values("epoch")
            if len(e):
                ax.plot(e["epoch"] + 1, e["value"], style, ms=3, label=split)
        t = test.get(f"test/{what}")
        if t is not None and np.isfinite(t):
            ax.axhline(t, color="k", ls=":", lw=1, label=f"test {t:.3g}")
        ax.set(xlabel="epoch", ylabel=what)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def gradients(steps: pd.DataFrame, steps_per_epoch: int, title: str) -> bytes:
    """RMS weight gradient per layer (input → output) at step 0 and averaged over the last epoch."""
    fig = Figure(figsize=(SIZE[0] / 2 + 0.5, SIZE[1]))
    ax = fig.subplots()
    g = steps[(steps["group"] == "grad") & (steps["stat"] == "rms")]
    if len(g):
        last = int(g["step"].max())
        first_of_last = last - (last % steps_per_epoch)
        layers = g.drop_duplicates("layer_index").sort_values("layer_index")
        init = g[g["step"] == 0].groupby("layer_index")["value"].mean()
        end = g[g["step"] >= first_of_last].groupby("layer_index")["value"].mean()
        ax.plot(init.index, _positive(init.values), "-o", ms=3, label="initialisation (step 0)")
        ax.plot(end.index, _positive(end.values), "-s", ms=3, label=f"last epoch (steps {first_of_last}–{last})")
        ax.set_xticks(layers["layer_index"], layers["layer"], rotation=90, fontsize=6)
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost more than the rest of the figure
        ax.legend(fontsize=7)
    ax.set(ylabel="RMS weight gradient")
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return _png(fig, left=0.19, bottom=0.27)


def signal(sig: pd.DataFrame, title: str) -> bytes:
    """Forward spread of each unit across the probe batch and back-propagated RMS gradient per
    activation layer (input → output), at initialisation and after training."""
    fig = Figure(figsize=SIZE)
    for ax, stat, label in zip(
        fig.subplots(1, 2),
        ("spread", "backprop_rms"),
        ("forward spread (std over examples)", "back-propagated RMS gradient"),
    ):
        s = sig[sig["stat"] == stat]
        for phase, style in (("init", "-o"), ("end", "--s")):
            p = s[s["phase"] == phase].sort_values("layer_index")
            if len(p):
                ax.plot(p["layer_index"], _positive(p["value"]), style, ms=3, label=phase)
        if len(s):
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost more than the rest of the figure
            ax.legend(fontsize=7)
        ax.set(xlabel="activation layer (input → output)", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def draw(tables: dict[str, pd.DataFrame], steps_per_epoch: int, title: str, result: dict) -> dict[str, bytes]:
    """name (`curves.png`, `gradients.png`, `signal.png`) -> PNG bytes, for the tables the cell has."""
    epochs, steps, probe = (tables.get(t, ()) for t in (contract.EPOCHS, contract.DIAGNOSTICS, contract.SIGNAL))
    out = {"curves.png": curves(epochs, title, result)} if len(epochs) else {}
    if len(steps):
        out["gradients.png"] = gradients(steps, steps_per_epoch, title)
    if len(probe):
        out["signal.png"] = signal(probe, title)
    return out
