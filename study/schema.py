"""The type of every key a user sets in a composed cell config, checked before anything runs.

`SCHEMA` is the one table: dotted key (a `*` segment matches any one key) -> `Spec`. `check(cfg)`
walks the composed config (keys under `hydra.` are Hydra's and skipped; keys the table does not
name are the other checks' business) and raises a one-line `ConfigError` naming the key, the value
given and what is expected, e.g. `model.depth='abc' must be an integer >= 1 (got str)`.

Hydra parses command-line values: `2.5` arrives as a float, `abc` as a string, `true` as a bool,
`[1]` as a list. Here a bool is not an integer, an integer is a number, and numbers are finite.
Values that interpolate others are checked after every literal value, so a wrong value is named
where it was set, not where it was copied to. Cross-key and registry checks (an unknown activation,
a batch larger than the data) stay in `study.config`, `study.models`, `study.optimizers`, ...
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from study.errors import ConfigError
from study.models import MAX_POOLS
from study.verdicts import Thresholds

KINDS = {  # kind -> (Python types, said once, said of a list's items); a bool is only a bool
    "int": (int, "an integer", "integers"),
    "float": ((int, float), "a finite number", "finite numbers"),
    "bool": (bool, "true or false", "booleans"),
    "str": (str, "a string", "strings"),
    "list": (list, "a list", "lists"),
    "mapping": (dict, "a mapping", "mappings"),
}


@dataclass(frozen=True)
class Spec:
    """One key's type: `kind`, an optional range (ge/gt/le/lt), other values accepted as they are
    (`also`: 'full', 'auto', None), a list's item spec, and a note appended to the error."""

    kind: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple = ()
    items: Spec | None = None
    note: str = ""

    def or_(self, *values) -> Spec:
        """The same spec, also accepting these values (None: null)."""
        return dataclasses.replace(self, also=self.also + values)

    def expected(self, plural: bool = False) -> str:
        """`an integer >= 1 or 'full'`, `a finite number in [0, 1)`, `a list of integers >= 1 or null`."""
        text = KINDS[self.kind][2 if plural else 1] + self._range()
        if self.items is not None:
            text += f" of {self.items.expected(plural=True)}"
        alts = [text, *("null" if a is None else repr(a) for a in self.also)]
        return alts[0] if len(alts) == 1 else ", ".join(alts[:-1]) + " or " + alts[-1]

    def _range(self) -> str:
        lo, lo_in = (self.ge, True) if self.ge is not None else (self.gt, False)
        hi, hi_in = (self.le, True) if self.le is not None else (self.lt, False)
        if lo is None and hi is None:
            return ""
        if lo is None:
            return f" {'<=' if hi_in else '<'} {_num(hi)}"
        if hi is None:
            return f" {'>=' if lo_in else '>'} {_num(lo)}"
        if self.kind == "int":
            return f" from {_num(lo)} to {_num(hi)}"
        return f" in {'[' if lo_in else '('}{_num(lo)}, {_num(hi)}{']' if hi_in else ')'}"

    def problem(self, v) -> str | None:
        """None if `v` fits; else what is wrong: the type given ('got str') or '' (out of range)."""
        if any(v is a or (type(v) is type(a) and v == a) for a in self.also):
            return None
        if not _is(self.kind, v):
            return f"got {_type_name(v)}"
        if self.kind in ("int", "float"):
            finite = self.kind == "int" or math.isfinite(v)
            if not (
                finite
                and (self.ge is None or v >= self.ge)
                and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le)
                and (self.lt is None or v < self.lt)
            ):
                return ""
        if self.items is not None:
            for i, item in enumerate(v):
                if self.items.problem(item) is not None:
                    return f"item {i}: {item!r}"
        return None

    def check(self, key: str, v) -> None:
        wrong = self.problem(v)
        if wrong is not None:
            said = f" ({wrong})" if wrong else ""
            raise ConfigError(f"{key}={v!r} must be {self.expected()}{said}{'; ' + self.note if self.note else ''}")


def _is(kind: str, v) -> bool:
    if isinstance(v, bool):
        return kind == "bool"
    return isinstance(v, KINDS[kind][0])


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _type_name(v) -> str:
    return "null" if v is None else "mapping" if isinstance(v, dict) else type(v).__name__


def integer(ge=None, le=None, **kw) -> Spec:
    return Spec("int", ge=ge, le=le, **kw)


def number(ge=None, **kw) -> Spec:
    return Spec("float", ge=ge, **kw)


def listof(items: Spec, **kw) -> Spec:
    return Spec("list", items=items, **kw)


BOOL, STR, MAP = Spec("bool"), Spec("str"), Spec("mapping")
FRACTION = number(0, lt=1)  # in [0, 1)

SCHEMA: dict[str, Spec] = {
    "seed": integer(0, 2**32 - 1),  # NumPy's seed range
    "experiment_name": STR.or_(None),
    "question": STR.or_(None),
    "criteria": MAP.or_(None),  # the preset's decision rules (its report checks them against its defaults)
    "criteria.reach": number(gt=0, le=1),  # edge_of_stability: at the edge from reach · 2/η
    "criteria.band": listof(number(gt=0)),  # edge_of_stability: [low, high] × 2/η
    "criteria.controls": listof(number(gt=0)),  # edge_of_stability: step sizes that must not reach the edge
    "criteria.decide_share": number(gt=0.5, le=1),  # second_order: share of seed pairs that decides
    "criteria.reach_below": number(gt=0, lt=1),  # he_2015_fig2: converged when an epoch's loss <= this × ln K
    "criteria.stalls_above": number(gt=0, lt=1),  # he_2015_width: trains when last loss <= this × first
    "arm": STR,
    "regularization": STR,
    "mitigation": STR,
    "size": STR,
    "tuned_lr_scale": MAP,  # the grid's multiple of the learning rate per arm, optimizer, depth (d8 ...)
    "tuned_lr_scale.*": MAP,
    "tuned_lr_scale.*.*": MAP,
    "tuned_lr_scale.*.*.*": number(gt=0),
    "lr_ceiling": MAP,  # second_order: each optimizer's learning-rate ceiling per model kind
    "lr_ceiling.*": MAP,
    "lr_ceiling.*.*": number(gt=0),
    "so_lr_scale": MAP,  # second_order: the pilot's multiple of that ceiling per optimizer and model kind
    "so_lr_scale.*": MAP,
    "so_lr_scale.*.*": number(gt=0),
    "so_steps": MAP,  # second_order: full-batch steps per optimizer
    "so_steps.*": integer(1),
    "data": MAP,
    "data.name": STR,
    "data.val_fraction": FRACTION,
    "data.train_subset": integer(1).or_(None),
    "data.test_subset": integer(1).or_(None),
    "data.standardize": BOOL,
    "data.options": MAP,  # the dataset builder's keyword arguments
    "data.options.n_train": integer(1),  # data=synthetic's options
    "data.options.n_test": integer(1),
    "data.options.image_size": integer(1),
    "data.options.num_classes": integer(2),
    "model": MAP,  # study.models.ModelSpec
    "model.kind": STR,
    "model.depth": integer(1),
    "model.width": integer(1),
    "model.kernel_size": integer(1),
    "model.activation": STR,
    "model.activation_params": MAP.or_(None),
    "model.activation_params.*": MAP.or_(None),
    "model.activation_params.*.alpha": number(),
    "model.init": STR,
    "model.init_std": number(0),
    "model.init_scale": number(gt=0),
    "model.max_pools": integer(0, MAX_POOLS),
    "model.pooling": STR,
    "model.pool_after": listof(integer(1)).or_(None),
    "model.double_at_pool": BOOL,
    "model.batch_norm": BOOL,
    "model.bn_momentum": FRACTION,
    "model.residual": BOOL,
    "model.dropout": FRACTION,
    "model.l1": number(0),
    "model.l2": number(0),
    "model.head_units": listof(integer(1)).or_(None),
    "optimizer": MAP,  # study.optimizers.PARAMS, study.newton.Newton
    "optimizer.name": STR,
    "optimizer.learning_rate": number(gt=0),
    "optimizer.lr_scale": number(gt=0, note="it multiplies optimizer.learning_rate"),
    "optimizer.clipnorm": number(gt=0).or_(None),
    "optimizer.clipvalue": number(gt=0).or_(None),
    "optimizer.params": MAP.or_(None),
    "optimizer.params.momentum": number(0, le=1),
    "optimizer.params.rho": FRACTION,
    "optimizer.params.beta_1": FRACTION,
    "optimizer.params.beta_2": FRACTION,
    "optimizer.params.weight_decay": number(0),
    "optimizer.params.damping": number(gt=0),
    "optimizer.params.cg_iters": integer(1),
    "optimizer.params.cg_tol": number(gt=0, lt=1),
    "optimizer.params.adapt_damping": BOOL,
    "optimizer.params.min_damping": number(gt=0),
    "optimizer.params.max_damping": number(gt=0),
    "optimizer.params.max_params": integer(1),
    "optimizer.params.backtracks": integer(1),
    "schedule": MAP,
    "schedule.name": STR,
    "schedule.decay_rate": number(gt=0),
    "schedule.decay_epochs": number(gt=0),
    "schedule.alpha": number(0, le=1),
    "diagnostics": MAP,
    "diagnostics.level": STR,
    "diagnostics.log_every_n_steps": integer(1).or_("auto"),
    "diagnostics.activation_every_n_steps": integer(1).or_("log"),
    "diagnostics.small_grad_threshold": number(0),
    "diagnostics.probe_size": integer(1),
    "diagnostics.histogram_epochs": listof(integer(1)).or_(None),  # 1-based; step 0 is always drawn
    "diagnostics.verdict": MAP.or_(None),
    **{f"diagnostics.verdict.{f.name}": number(0) for f in fields(Thresholds)},
    "diagnostics.curvature": MAP.or_(None),
    "diagnostics.curvature.every_n_steps": integer(0, note="0: off"),
    "diagnostics.curvature.examples": integer(1, note="null: the whole training set").or_(None),
    "diagnostics.curvature.iterations": integer(1),
    "diagnostics.curvature.top_k": integer(1),
    "diagnostics.curvature.trace_samples": integer(0),
    "tracking": MAP,
    "tracking.uri": STR,
    "tracking.experiment": STR,
    "tracking.artifact_location": STR.or_(None),
    "tracking.run_name": STR,
    "tracking.rerun": BOOL,
    "tracking.cell_figures": BOOL,
    "tracking.wait_s": number(0),
    "train": MAP,
    "train.epochs": integer(0, note="0: no training, the signal probe at initialisation only"),
    "train.batch_size": integer(1, note="'full': batch gradient descent, 1: stochastic, N: mini-batch").or_("full"),
    "train.loss": STR,
    "train.deterministic": BOOL,
    "train.time_steps": BOOL,
    "train.mixed_precision": BOOL,
    "train.verbose": integer(0, 2).or_("auto"),
    "train.steps_per_execution": integer(1),
    "train.threads": integer(0).or_("auto", None),  # 0 or null: TensorFlow's default
    "train.callbacks": listof(MAP).or_(None),  # each {_target_: module.Class, ...}
}
_EXACT = {k: s for k, s in SCHEMA.items() if "*" not in k}
_PATTERNS = [(k.split("."), s) for k, s in SCHEMA.items() if "*" in k]


def spec(key: str) -> Spec | None:
    """The spec of a dotted key, or None (not ours: the other checks decide)."""
    if key in _EXACT:
        return _EXACT[key]
    parts = key.split(".")
    for pattern, s in _PATTERNS:
        if len(pattern) == len(parts) and all(p in ("*", k) for p, k in zip(pattern, parts)):
            return s
    return None


def check(cfg: DictConfig) -> None:
    """Every key of the table present in `cfg` has a value of its type: literal values first, then
    those that interpolate others (resolved only then)."""
    later: list = []
    _walk(cfg, "", later)
    for node, k, key, s in later:
        _check(node, k, key, s, None)


def _walk(node: DictConfig, prefix: str, later: list | None) -> None:
    for k in node:
        key = f"{prefix}{k}"
        s = spec(key)
        if s is None:  # hydra.*, and keys the table does not name
            continue
        if later is not None and OmegaConf.is_interpolation(node, k):
            later.append((node, k, key, s))
        else:
            _check(node, k, key, s, later)


def _check(node: DictConfig, k, key: str, s: Spec, later: list | None) -> None:
    try:
        v = node[k]
        if isinstance(v, (DictConfig, ListConfig)) and not (isinstance(v, DictConfig) and s.kind == "mapping"):
            v = OmegaConf.to_container(v, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key} cannot be resolved: {str(err).splitlines()[0]}") from None
    if isinstance(v, DictConfig):
        _walk(v, key + ".", later)
    else:
        s.check(key, v)
