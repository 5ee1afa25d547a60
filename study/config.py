"""Config checks and the values derived from a resolved cell config: everything that needs no data.

Used by the task function (`study.train`) and by the sweep callback (`study.sweep`), which checks
every cell of a grid before the first one trains. Only these modules read the Hydra config.
"""

from __future__ import annotations

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
    losses.check(cfg.train.get("loss", "cross_entropy"))
    if o.name == "newton" and cfg.train.get("mixed_precision"):
        raise ConfigError("optimizer=newton runs in float32: set train.mixed_precision=false")
    check_curvature(cfg.diagnostics.get("curvature") or {})
    thresholds(cfg)


def check_curvature(cc) -> None:
    """`diagnostics.curvature.*` against each other (their types and ranges: `study.schema`)."""
    if cc.get("top_k", 1) > cc.get("iterations", 20):
        raise ConfigError(
            f"diagnostics.curvature.top_k={cc.get('top_k')} must not exceed iterations={cc.get('iterations')}"
        )


def check_data(cfg: DictConfig) -> None:
    """The checks that need the data's size, not its values (subsets, batch size); a sweep runs
    them for every cell before the first one trains."""
    d = cfg.data
    n_train = data.train_size(
        d.name,
        val_fraction=d.val_fraction,
        train_subset=d.get("train_subset"),
        test_subset=d.get("test_subset"),
        options=OmegaConf.to_container(d.options) if "options" in d else {},
    )
    batch_size(cfg, n_train)


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
    return float(cfg.optimizer.learning_rate) * float(cfg.optimizer.get("lr_scale", 1.0))
