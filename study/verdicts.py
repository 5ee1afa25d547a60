"""The gradient verdict: one label per cell and the numbers that decided it, from recorded values only.

`decide(evidence, thresholds)` is a pure function of a run's summary metrics (the `diag/*` metrics,
`val/loss`, `train/loss`, the outcome and the number of classes K), so the report recomputes it from
any store, older sweeps included, with thresholds changed on its command line.

Evidence, in order of weight (DESIGN.md): did the network learn? Progress P is the larger of
1 - final validation loss / ln K and the accuracy's (accuracy - c) / (1 - c), c the majority class's
share of the validation set (`diag/chance_accuracy`, else 1/K); 0 = chance, 1 = perfect. (Loss
alone called a net at 0.55 accuracy "stalled": after 3 epochs its loss can stay near ln K while it
classifies half the examples right.) Then, in time order, what was wrong at initialisation and what
developed in training.

The initial finding (`init_finding`: none, vanishing, collapsed, exploding) uses initialisation
evidence only (the weight-gradient ratio at step 0 and the forward spread of the signal probe at
init), so cells with the same initial weights carry the same finding whatever their optimizer.
When several match, the forward signal comes first (`collapsed`: the deep layers' output does not
depend on the input, so no gradient can train them), then the gradient ratio (`vanishing`,
`exploding`); every match is in the reason. The order is fixed, not a comparison of margins.

The verdict, in this order:
1. `diverged`  the loss turned non-finite (training stopped at that step).
2. `exploding` non-finite gradient entries, the global gradient norm grew more than `growth_above`
               times its value at step 0, or the final validation loss exceeds `blowup_above` ln K.
3. `healthy`   P >= `progress_healthy`; any pathology seen is named in the reason ("trained despite").
4. `slow`      `progress_min` <= P < `progress_healthy`; pathologies named in the reason.
   No progress (P < `progress_min`):
5. a bad start: the initial finding (`vanishing`, `collapsed` or `exploding`), when there is one and
   the net never progressed (its best epoch's P, `diag/progress_peak`, below `progress_min`);
6. `died`      no pathology at init (or progress first), and at the end of training a pathology:
               weight-gradient ratio outside [vanishing_below, exploding_above] in the last epoch,
               forward spread collapsed, at least `dead_above` of the worst layer's channels dead, or
               updates frozen (median update/weight ratio below `frozen_below`); the reason gives
               the global gradient norm's peak and its step when recorded;
7. `stalled`   none of these: no progress and no gradient pathology.
`unknown`: no loss recorded (diagnostics off and no validation data, or a failed run).
Every rule that matched is in `verdict_reason`, and a value within `near_factor` of its threshold
(on either side) is said to be near it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from study import contract

LABELS = ("diverged", "exploding", "vanishing", "collapsed", "died", "stalled", "slow", "healthy", "unknown")
PATHOLOGIES = ("diverged", "exploding", "vanishing", "collapsed", "died", "stalled")
INIT_FINDINGS = ("none", "vanishing", "collapsed", "exploding")  # tag `init_finding`

# Evidence keys (MLflow metric names of each run's summary)
PROGRESS = "diag/progress"
RATIO_INIT, RATIO_FINAL = "diag/ratio_first_last_init", "diag/ratio_first_last_final"
FORWARD_INIT, FORWARD_FINAL = "diag/forward_ratio_init", "diag/forward_ratio_final"
BACKPROP_INIT, BACKPROP_FINAL = "diag/backprop_ratio_init", "diag/backprop_ratio_final"
DEAD_INIT, DEAD_FINAL = "diag/dead_frac_init", "diag/dead_frac_final"
GROWTH = "diag/grad_growth"
NONFINITE = "diag/nonfinite_total"
UPDATE_RATIO = "diag/update_ratio_final"
CHANCE_ACCURACY = "diag/chance_accuracy"
FIRST_NONFINITE = "diag/first_nonfinite_step"  # when there was one
GRAD_NOISE = "diag/grad_norm_noise"  # a description of the run, not used by the rules
PROGRESS_PEAK = "diag/progress_peak"  # the best epoch's progress P (loss or accuracy)
GROWTH_STEP = "diag/grad_peak_step"  # the step of the global gradient norm's largest value
# 1 where the report backfilled GROWTH_STEP from its subsampled step table (runs recorded before the
# step was): the sampled peak, which can lie tens of steps from the true one or miss it
GROWTH_STEP_SAMPLED = "diag/grad_peak_step_sampled"
EVIDENCE = (
    PROGRESS,
    RATIO_INIT,
    RATIO_FINAL,
    FORWARD_INIT,
    FORWARD_FINAL,
    BACKPROP_INIT,
    BACKPROP_FINAL,
    DEAD_INIT,
    DEAD_FINAL,
    GROWTH,
    NONFINITE,
    UPDATE_RATIO,
    CHANCE_ACCURACY,
    PROGRESS_PEAK,
    GROWTH_STEP,
)


def step_evidence(table: np.ndarray, keys: list[str], ratio_keys: tuple[str, str], steps_per_epoch: int) -> dict:
    """The verdict's evidence from the per-step statistics: `table` one row per step, one column per
    statistic named in `keys`; `ratio_keys` the RMS weight-gradient statistics of the first and last
    hidden layers (diagnostics.ratio_keys)."""
    first, last = (keys.index(k) for k in ratio_keys)
    n_last = len(table) % steps_per_epoch or steps_per_epoch
    last_epoch = table[-n_last:]
    norms_all = table[:, keys.index(contract.GLOBAL_NORM)]
    with np.errstate(divide="ignore", invalid="ignore"):
        r_init = float(table[0, first] / table[0, last])
        r_final = float(np.mean(last_epoch[:, first]) / np.mean(last_epoch[:, last]))
        growth = float(np.nanmax(norms_all) / norms_all[0]) if np.isfinite(norms_all).any() else float("nan")
    peak = int(np.nanargmax(norms_all)) if np.isfinite(norms_all).any() else float("nan")
    norms = norms_all[-max(steps_per_epoch, min(10, len(table))) :]
    with np.errstate(divide="ignore", invalid="ignore"):  # step-to-step jitter of log ||g||, blind to slow drift
        jumps = np.diff(np.log(norms))
        noise = float(np.sqrt(np.mean(jumps**2) / 2)) if len(jumps) else float("nan")
    updates = [keys.index(k) for k in keys if k.endswith("/update_ratio")]
    return {
        RATIO_INIT: r_init,
        RATIO_FINAL: r_final,
        NONFINITE: float(np.nansum(table[:, keys.index(contract.NONFINITE_GRADS)])),
        GRAD_NOISE: noise,
        GROWTH: growth,
        GROWTH_STEP: peak,
        UPDATE_RATIO: float(np.median(np.mean(last_epoch[:, updates], axis=0))),
    }


def signal_evidence(rows: list[dict]) -> dict[str, float]:
    """Per phase of the signal probe (init, end): forward spread last/first hidden activation,
    back-propagated RMS gradient first/last, and the dead-channel fraction of the worst layer (when
    defined)."""
    out = {}
    for phase, keys in (
        ("init", (FORWARD_INIT, BACKPROP_INIT, DEAD_INIT)),
        ("end", (FORWARD_FINAL, BACKPROP_FINAL, DEAD_FINAL)),
    ):
        r = [row for row in rows if row["phase"] == phase]
        if not r:
            continue
        forward, backprop, dead_key = keys
        with np.errstate(divide="ignore", invalid="ignore"):
            out[forward] = float(np.float64(r[-1]["spread"]) / np.float64(r[0]["spread"]))
            out[backprop] = float(np.float64(r[0]["backprop_rms"]) / np.float64(r[-1]["backprop_rms"]))
        dead = [row["dead_frac"] for row in r if "dead_frac" in row]
        if dead:
            out[dead_key] = float(max(dead))
    return out


@dataclass(frozen=True)
class Thresholds:
    """`diagnostics.verdict.*` in the config; `--verdict key=value` on the report's command line."""

    progress_min: float = 0.05  # below: no progress (validation loss within 5 % of ln K)
    progress_healthy: float = 0.25  # at or above: healthy
    vanishing_below: float = 1e-2  # first/last RMS weight-gradient ratio
    exploding_above: float = 1e2
    collapse_below: float = 0.05  # forward spread, last hidden layer over first
    dead_above: float = 0.5  # fraction of dead channels in the worst layer
    growth_above: float = 1e3  # global gradient norm, largest over training / at step 0
    blowup_above: float = 1.5  # final validation loss in units of ln K
    frozen_below: float = 1e-5  # median over layers of |update| / |weight| in the last epoch
    near_factor: float = 1.5  # a value within this factor of a threshold is reported as near it

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> Thresholds:
        """From a config mapping or `key=value` pairs; unknown keys and non-numbers fail, naming them."""
        from study.errors import ConfigError

        values = dict(values or {})
        names = [f.name for f in fields(cls)]
        out = {}
        for k, v in values.items():
            if k not in names:
                raise ConfigError(f"unknown verdict threshold {k!r}; valid: {', '.join(names)}")
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"diagnostics.verdict.{k}={v!r} must be a number") from None
            if not math.isfinite(out[k]) or out[k] < 0:
                raise ConfigError(f"diagnostics.verdict.{k}={v!r} must be a finite number >= 0")
        th = cls(**out)
        if th.progress_min > th.progress_healthy:
            raise ConfigError(
                f"diagnostics.verdict.progress_min={th.progress_min} must not exceed "
                f"progress_healthy={th.progress_healthy}"
            )
        return th


def chance_loss(num_classes: int | float, loss_fn: str | None = None) -> float:
    """The loss of a prediction that ignores the input: ln K for cross-entropy (uniform
    probabilities); for `mse` on one-hot targets (K - 1) / K², the loss of predicting 1/K for every
    output (each output's variance over balanced classes, averaged over the K outputs)."""
    if not num_classes or not math.isfinite(num_classes) or num_classes < 2:
        return float("nan")
    if str(loss_fn) == "mse":
        return (num_classes - 1) / num_classes**2
    return math.log(num_classes)


def progress(loss: float, num_classes: int | float, loss_fn: str | None = None) -> float:
    """P = 1 - loss / chance loss (ln K for cross-entropy): 0 at chance, 1 at zero loss, negative
    when worse."""
    if loss is None or not math.isfinite(loss):
        return float("nan")
    return 1.0 - float(loss) / chance_loss(num_classes, loss_fn)


def accuracy_progress(accuracy: float, num_classes: int | float, chance: float | None = None) -> float:
    """A = (accuracy - c) / (1 - c): 0 at chance, 1 when every example is right. Chance c is the
    majority class's share of the evaluated examples (a net whose output ignores its input scores
    that), 1/K when not recorded."""
    if not num_classes or num_classes < 2 or accuracy is None or not math.isfinite(accuracy):
        return float("nan")
    c = 1.0 / num_classes if chance is None else float(chance)
    return (float(accuracy) - c) / (1.0 - c) if c < 1 else float("nan")


def _num(ev: Mapping, key: str) -> float:
    v = ev.get(key)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _g(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.2g}" if abs(v) < 0.01 or abs(v) >= 1000 else f"{v:.3g}"


def _learned(ev: Mapping) -> tuple[float, float, float, str, str]:
    """Progress P (the larger of the loss's and the accuracy's), the loss judged, the loss of chance,
    its unit and the words that say how much was learned."""
    k = _num(ev, "num_classes")
    mse = str(ev.get("loss_fn")) == "mse"
    ln_k = chance_loss(k, "mse" if mse else None)  # ln K, or the mean-squared-error loss of chance
    unit = "chance loss" if mse else "ln K"
    loss, which = _num(ev, "val/loss"), "val"
    if not math.isfinite(loss) and not math.isfinite(_num(ev, "train/loss")):
        loss = float("nan")
    elif not math.isfinite(loss):
        loss, which = _num(ev, "train/loss"), "train"
    p = _num(ev, PROGRESS)
    if not math.isfinite(p):
        p = progress(loss, k, "mse" if mse else None)
    learned = f"{which} loss {_g(loss)} = {_g(loss / ln_k)} {unit}, progress {_g(p)}"
    acc, acc_which = _num(ev, "val/accuracy"), "val"
    if not math.isfinite(acc):
        acc, acc_which = _num(ev, "train/accuracy"), "train"
    chance = _num(ev, CHANCE_ACCURACY)  # the majority class's share: what a constant prediction scores
    a = accuracy_progress(acc, k, chance if math.isfinite(chance) else None)
    if math.isfinite(a):  # a net that classifies well has learned, whatever its (over-confident) loss says
        learned += f"; {acc_which} accuracy {_g(acc)}, progress {_g(a)}"
        p = a if not math.isfinite(p) else max(p, a)
    return p, loss, ln_k, unit, learned


def peak_progress(epochs: list[Mapping], num_classes, loss_fn=None, chance=None) -> float:
    """The best epoch's progress P: the larger of the loss's and the accuracy's progress at each
    epoch (`val/loss`, `val/accuracy`, else the training ones), the largest over epochs."""
    best = float("nan")
    for e in epochs:
        ps = []
        for split in ("val", "train"):
            loss, acc = _num(e, f"{split}/loss"), _num(e, f"{split}/accuracy")
            if math.isfinite(loss) or math.isfinite(acc):
                ps = [progress(loss, num_classes, loss_fn), accuracy_progress(acc, num_classes, chance)]
                break
        ps = [p for p in ps if math.isfinite(p)]
        if ps and not max(ps) <= best:
            best = max(ps)
    return best


def learned(ev: Mapping) -> float:
    """Progress P of a run (the larger of the loss's and the accuracy's), as the rules judge it."""
    return _learned(ev)[0]


def _near(v: float, threshold: float, th: Thresholds) -> str:
    """' (near the threshold)' when v is within th.near_factor of it, on either side."""
    if threshold > 0 and v > 0 and 1 / th.near_factor <= v / threshold <= th.near_factor:
        return " (near the threshold)"
    return ""


def _ratio_findings(v: float, when: str, th: Thresholds) -> list[tuple[str, str]]:
    """(label, text) for a first/last weight-gradient ratio past a threshold."""
    if not math.isfinite(v) or v <= 0:
        return []
    if v > th.exploding_above:
        text = f"first/last weight-gradient ratio {when} {_g(v)} > {_g(th.exploding_above)}"
        return [("exploding", text + _near(v, th.exploding_above, th))]
    if v < th.vanishing_below:
        text = f"first/last weight-gradient ratio {when} {_g(v)} < {_g(th.vanishing_below)}"
        return [("vanishing", text + _near(v, th.vanishing_below, th))]
    return []


def _forward_findings(v: float, when: str, th: Thresholds) -> list[tuple[str, str]]:
    if not math.isfinite(v) or v <= 0 or v >= th.collapse_below:
        return []
    text = f"forward spread last/first {when} {_g(v)} < {_g(th.collapse_below)}"
    return [("collapsed", text + _near(v, th.collapse_below, th))]


def _near_misses(ev: Mapping, th: Thresholds) -> list[str]:
    """Initialisation values on the safe side of a threshold but within th.near_factor of it: said
    in the reason, since a seed just across the line gets another label."""
    out = []
    checks = (  # key, threshold, which side is safe, what
        (RATIO_INIT, th.vanishing_below, 1, "first/last weight-gradient ratio at init"),
        (RATIO_INIT, th.exploding_above, -1, "first/last weight-gradient ratio at init"),
        (FORWARD_INIT, th.collapse_below, 1, "forward spread last/first at init"),
    )
    for key, threshold, side, what in checks:
        v = _num(ev, key)
        if math.isfinite(v) and v > 0 and side * (v - threshold) >= 0 and _near(v, threshold, th):
            out.append(f"{what} {_g(v)} is near the threshold {_g(threshold)}")
    return out


def init_findings(ev: Mapping, th: Thresholds | None = None) -> list[tuple[str, str]]:
    """(label, text) of every pathology at initialisation, the forward collapse first: from
    the step-0 weight-gradient ratio and the forward spread of the init probe only."""
    th = th or Thresholds()
    return _forward_findings(_num(ev, FORWARD_INIT), "at init", th) + _ratio_findings(
        _num(ev, RATIO_INIT), "at init", th
    )


def init_finding(ev: Mapping, th: Thresholds | None = None) -> str:
    """The tag `init_finding`: the strongest pathology at initialisation, or `none`."""
    found = init_findings(ev, th)
    return found[0][0] if found else "none"


def training_findings(ev: Mapping, th: Thresholds) -> list[tuple[str, str]]:
    """(label, text) of every pathology at the end of training (last epoch, end probe)."""
    found = list(_ratio_findings(_num(ev, RATIO_FINAL), "in the last epoch", th))
    found += _forward_findings(_num(ev, FORWARD_FINAL), "at the end", th)
    dead = _num(ev, DEAD_FINAL)
    if math.isfinite(dead) and dead >= th.dead_above:
        found.append(("dead", f"dead channels in the worst layer at the end {_g(dead)} >= {_g(th.dead_above)}"))
    upd = _num(ev, UPDATE_RATIO)
    if math.isfinite(upd) and upd < th.frozen_below:
        found.append(("frozen", f"update/weight in the last epoch {_g(upd)} < {_g(th.frozen_below)}"))
    return found


def _turned(ev: Mapping) -> str:
    """The global gradient norm's peak in a net that died, and its step when recorded (not called
    the step where it turned: a net can go on learning for hundreds of steps after that peak)."""
    step, growth = _num(ev, GROWTH_STEP), _num(ev, GROWTH)
    if not math.isfinite(growth) or growth <= 1:
        return ""
    if not math.isfinite(step):
        return f"the global gradient norm peaked at {_g(growth)}x its step-0 value (its step not recorded)"
    if _num(ev, GROWTH_STEP_SAMPLED) == 1:
        return (
            f"the global gradient norm peaked at {_g(growth)}x its step-0 value (its step not recorded; the "
            f"subsampled step table's highest norm is at step {int(step)})"
        )
    return f"the global gradient norm peaked at step {int(step)}, at {_g(growth)}x its step-0 value"


def decide(ev: Mapping, th: Thresholds | None = None) -> tuple[str, str]:
    """(label, reason) from a run's recorded evidence: the metrics in EVIDENCE plus `val/loss`,
    `train/loss`, `num_classes` and `outcome`; missing values are skipped and said so."""
    th = th or Thresholds()
    p, loss, ln_k, unit, learned = _learned(ev)

    if str(ev.get(contract.OUTCOME)) == contract.DIVERGED or math.isfinite(_num(ev, "train/diverged_at_step")):
        step = _num(ev, "train/diverged_at_step")
        if not math.isfinite(step):
            step = _num(ev, FIRST_NONFINITE)
        return "diverged", f"loss non-finite at step {int(step) if math.isfinite(step) else '?'}"
    nonfinite, growth = _num(ev, NONFINITE), _num(ev, GROWTH)
    if math.isfinite(nonfinite) and nonfinite > 0:
        return "exploding", f"{int(nonfinite)} non-finite gradient entries; {learned}"
    if math.isfinite(growth) and growth > th.growth_above:
        return "exploding", f"global gradient norm grew {_g(growth)}x from step 0 > {_g(th.growth_above)}; {learned}"
    if math.isfinite(loss) and math.isfinite(ln_k) and loss > th.blowup_above * ln_k:
        return "exploding", f"{learned}: loss above {_g(th.blowup_above)} {unit}"
    if not math.isfinite(p):
        return "unknown", "no loss recorded"

    at_init = init_findings(ev, th)
    in_training = training_findings(ev, th)
    near = "".join(f"; {n}" for n in _near_misses(ev, th))
    if p >= th.progress_min:
        if p >= th.progress_healthy:
            label, head = "healthy", f"{learned} >= {_g(th.progress_healthy)}"
        else:
            label, head = "slow", f"{learned}, between {_g(th.progress_min)} and {_g(th.progress_healthy)}"
        seen = [text for _, text in at_init] + [text for _, text in in_training]
        return label, head + ("; trained despite " + "; ".join(seen) if seen else "") + near
    head = f"no progress: {learned} < {_g(th.progress_min)}"
    peak = _num(ev, PROGRESS_PEAK)
    progressed = math.isfinite(peak) and peak >= th.progress_min
    if progressed:
        head += f"; progress {_g(peak)} at its best epoch"
    start = "at init: " + "; ".join(f"{lab} ({t})" for lab, t in at_init) if at_init else "at init no pathology"
    if at_init and not progressed:
        return at_init[0][0], "; ".join([head, start, *_rest(in_training, ev)]) + near
    if in_training:
        return "died", "; ".join([head, start, *_rest(in_training, ev, turned=True)]) + near
    if progressed:
        return "died", f"{head}; {start}; then lost it (no pathology recorded at the end){near}"
    known = [f"weight-gradient ratio at init {_g(_num(ev, RATIO_INIT))}"]
    if any(map(math.isfinite, (_num(ev, FORWARD_INIT), _num(ev, FORWARD_FINAL)))):
        known.append(f"forward spread last/first at init {_g(_num(ev, FORWARD_INIT))}")
    else:
        known.append("forward signal not recorded")
    return "stalled", f"{head}; no gradient pathology ({', '.join(known)}){near}"


def _rest(in_training: list[tuple[str, str]], ev: Mapping, turned: bool = False) -> list[str]:
    """The reason's parts after the initial finding: what the end of training showed, and the
    gradient norm's peak."""
    parts = ["in training: " + "; ".join(f"{lab} ({t})" for lab, t in in_training)] if in_training else []
    if turned and _turned(ev):
        parts.append(_turned(ev))
    return parts
