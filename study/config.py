"""Config checks and the plan of one cell: `plan(cfg) -> CellPlan`, the typed specs read once from a
resolved cell config (model, data, optimizer, schedule, diagnostics, tracking) with batch size and
learning rate resolved, after every check that needs no training.

Used by the task function (`study.train`), the sweep callback (`study.sweep`), which plans every
cell of a grid before the first one trains, and the benchmarks. Only these modules read the Hydra
config. Every default lives in the YAML of conf/ (verdict thresholds: conf/diagnostics/default.yaml,
equal to `verdicts.Thresholds()`, tests/test_config_types.py checks it); none is repeated here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from study import data, losses, models, optimizers, schema, verdicts
from study import diagnostics as diag
from study.errors import ConfigError, unknown


def model_spec(cfg: DictConfig) -> models.ModelSpec:
    m = OmegaConf.to_container(cfg.model, resolve=True)
    act_params = m.pop("activation_params") or {}
    unknown_keys = set(act_params) - set(models.activations.ACTIVATIONS)
    if unknown_keys:
        raise unknown("activation in model.activation_params", sorted(unknown_keys)[0], models.activations.ACTIVATIONS)
    m["activation_params"] = act_params.get(m["activation"]) or {}
    m["head_units"] = list(m.get("head_units") or [])
    fields = models.ModelSpec.__dataclass_fields__
    extra = set(m) - set(fields)
    if extra:
        raise ConfigError(f"unknown model option(s) {sorted(extra)}; valid: {sorted(fields)}")
    return models.ModelSpec(**m)


def check(cfg: DictConfig) -> None:
    """Every check that needs no data: fails before training, naming value and valid choices. First
    the type (and range) of every key (`study.schema`), then registries and keys against each other."""
    schema.check(cfg)
    models.check(model_spec(cfg))
    o = cfg.optimizer
    optimizers.check(
        o.name, o.learning_rate, dict(o.get("params") or {}), cfg.schedule.name, o.get("clipnorm"), o.get("clipvalue")
    )
    if cfg.data.name not in data.DATASETS:
        raise unknown("dataset", cfg.data.name, data.DATASETS)
    if cfg.diagnostics.level not in diag.LEVELS:
        raise unknown("diagnostics level", cfg.diagnostics.level, diag.LEVELS)
    losses.check(cfg.train.loss)
    if o.name == "newton" and cfg.train.mixed_precision:
        raise ConfigError("optimizer=newton runs in float32: set train.mixed_precision=false")
    optimizers.check_schedule(cfg.schedule.name, {k: v for k, v in _plain(cfg.schedule).items() if k != "name"})
    check_curvature(_plain(cfg.diagnostics.get("curvature")))
    thresholds(cfg)


def check_curvature(cc: dict) -> None:
    """`diagnostics.curvature.*`: every key of CurvatureSpec (none other), and against each other
    (their types and ranges: `study.schema`). Empty or null: off."""
    if not cc:
        return
    fields = list(CurvatureSpec.__dataclass_fields__)
    extra, missing = sorted(set(cc) - set(fields)), [f for f in fields if f not in cc]
    if extra or missing:
        what = f"is not a curvature key ({extra[0]})" if extra else f"lacks {missing[0]}"
        raise ConfigError(
            f"diagnostics.curvature {what}; its keys: {', '.join(fields)} (conf/diagnostics/default.yaml)"
        )
    if cc["top_k"] > cc["iterations"]:
        raise ConfigError(
            f"diagnostics.curvature.top_k={cc.get('top_k')} must not exceed iterations={cc.get('iterations')}"
        )


def thresholds(cfg: DictConfig) -> verdicts.Thresholds:
    v = cfg.diagnostics.get("verdict")
    return verdicts.Thresholds.from_mapping(OmegaConf.to_container(v, resolve=True) if v is not None else {})


def batch_size(cfg: DictConfig, n_train: int) -> int:
    bs = n_train if cfg.train.batch_size == "full" else int(cfg.train.batch_size)
    if bs > n_train:
        raise ConfigError(
            f"train.batch_size={bs} is larger than the training set ({n_train} examples of "
            f"{cfg.data.name!r}); use at most {n_train} or 'full'"
        )
    return bs


def learning_rate(cfg: DictConfig) -> float:
    """The optimizer's learning rate times `optimizer.lr_scale` (the axis of tuned presets)."""
    return float(cfg.optimizer.learning_rate) * float(cfg.optimizer.lr_scale)


@dataclass(frozen=True)
class DataSpec:
    """`data.*`, and the probe batch's size (`diagnostics.probe_size`): the arguments of data.load."""

    name: str
    val_fraction: float
    train_subset: int | None
    test_subset: int | None
    options: dict
    standardize: bool
    probe_size: int

    def train_size(self) -> int:
        return data.train_size(
            self.name,
            val_fraction=self.val_fraction,
            train_subset=self.train_subset,
            test_subset=self.test_subset,
            options=self.options,
        )

    def load(self, seed: int) -> data.Splits:
        return data.load(
            self.name,
            seed=seed,
            val_fraction=self.val_fraction,
            train_subset=self.train_subset,
            test_subset=self.test_subset,
            options=self.options,
            probe_size=self.probe_size,
            standardize=self.standardize,
        )


@dataclass(frozen=True)
class ScheduleSpec:
    """`schedule.*`: a schedule's own keys (None where its YAML has none)."""

    name: str
    decay_rate: float | None = None
    decay_epochs: float | None = None
    alpha: float | None = None

    def build(self, learning_rate: float, steps_per_epoch: int, epochs: int):
        keys = {k: getattr(self, k) for k in ("decay_rate", "decay_epochs", "alpha") if getattr(self, k) is not None}
        return optimizers.schedule(self.name, learning_rate, steps_per_epoch, epochs, **keys)


@dataclass(frozen=True)
class OptimizerSpec:
    """`optimizer.*`, with the effective learning rate (learning rate × lr_scale)."""

    name: str
    learning_rate: float
    params: dict
    clipnorm: float | None
    clipvalue: float | None

    def build(self, lr):
        """The optimizer; `lr` the learning rate or its schedule."""
        return optimizers.build(self.name, lr, dict(self.params), clipnorm=self.clipnorm, clipvalue=self.clipvalue)


@dataclass(frozen=True)
class CurvatureSpec:
    """`diagnostics.curvature.*` (off when every_n_steps is 0)."""

    every_n_steps: int
    examples: int | None
    iterations: int
    top_k: int
    trace_samples: int


@dataclass(frozen=True)
class DiagnosticsSpec:
    """`diagnostics.*`: level, logging schedule, thresholds of the verdict, curvature."""

    level: str
    log_every_n_steps: int | str  # an integer, or "auto"
    activation_every_n_steps: int | str  # full level's activation statistics: an integer, or "log"
    small_grad_threshold: float
    histogram_epochs: tuple[int, ...] | None
    thresholds: verdicts.Thresholds
    curvature: CurvatureSpec

    def log_every(self, total_steps: int) -> int:
        """Steps between MLflow points: `auto` gives about 50 points a run."""
        return max(1, total_steps // 50) if self.log_every_n_steps == "auto" else int(self.log_every_n_steps)

    def activation_every(self, total_steps: int) -> int:
        """Steps between the full level's activation statistics (also at step 0 and the last step):
        `log` computes them at the logged steps."""
        every = self.activation_every_n_steps
        return self.log_every(total_steps) if every == "log" else int(every)


@dataclass(frozen=True)
class TrackingSpec:
    """`tracking.*`."""

    uri: str
    experiment: str
    artifact_location: str | None
    run_name: str
    rerun: bool
    cell_figures: bool
    wait_s: float


@dataclass(frozen=True)
class CellPlan:
    """One cell, read and checked once: what `train` builds, trains and records."""

    seed: int
    epochs: int
    loss: str
    batch_size: int  # resolved: `full` is the training set's size
    n_train: int
    steps_per_execution: int
    model: models.ModelSpec
    data: DataSpec
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    diagnostics: DiagnosticsSpec
    tracking: TrackingSpec

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_train / self.batch_size)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def plan(cfg: DictConfig) -> CellPlan:
    """The cell's plan: every check that needs no training (`check`, then the subsets and the batch
    size against the data's sizes, without loading it), each value read once."""
    check(cfg)
    d, o, s, dc, t = cfg.data, cfg.optimizer, cfg.schedule, cfg.diagnostics, cfg.tracking
    cc = _plain(dc.curvature)
    data_spec = DataSpec(
        name=d.name,
        val_fraction=float(d.val_fraction),
        train_subset=d.train_subset,
        test_subset=d.test_subset,
        options=_plain(d.get("options")),
        standardize=bool(d.standardize),
        probe_size=int(dc.probe_size),
    )
    n_train = data_spec.train_size()
    return CellPlan(
        seed=int(cfg.seed),
        epochs=int(cfg.train.epochs),
        loss=str(cfg.train.loss),
        batch_size=batch_size(cfg, n_train),
        n_train=n_train,
        # several steps per call into TensorFlow; Keras's own train step (diagnostics off) takes
        # one, so that its divergence guard stops at the exact step
        steps_per_execution=int(cfg.train.steps_per_execution) if dc.level != "off" else 1,
        model=model_spec(cfg),
        data=data_spec,
        optimizer=OptimizerSpec(o.name, learning_rate(cfg), _plain(o.get("params")), o.clipnorm, o.clipvalue),
        schedule=ScheduleSpec(**_plain(s)),
        diagnostics=DiagnosticsSpec(
            level=dc.level,
            log_every_n_steps=dc.log_every_n_steps,
            activation_every_n_steps=dc.get("activation_every_n_steps", "log"),
            small_grad_threshold=float(dc.small_grad_threshold),
            histogram_epochs=tuple(dc.histogram_epochs) if dc.histogram_epochs is not None else None,
            thresholds=thresholds(cfg),
            curvature=CurvatureSpec(**cc) if cc else CurvatureSpec(0, None, 0, 0, 0),  # null: off
        ),
        tracking=TrackingSpec(
            uri=t.uri,
            experiment=t.experiment,
            artifact_location=t.artifact_location,
            run_name=t.run_name,
            rerun=bool(t.rerun),
            cell_figures=bool(t.cell_figures),
            wait_s=float(t.wait_s),
        ),
    )
