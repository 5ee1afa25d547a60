"""Config checks and the values derived from a resolved cell config: everything that needs no data.

Used by the task function (`study.train`) and by the sweep callback (`study.sweep`), which checks
every cell of a grid before the first one trains. Only these modules read the Hydra config.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from study import data, losses, models, optimizers, verdicts
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
    """Every check that needs no data: fails before training, naming value and valid choices."""
    models.check(model_spec(cfg))
    o = cfg.optimizer
    optimizers.check(
        o.name, o.learning_rate, dict(o.get("params") or {}), cfg.schedule.name, o.get("clipnorm"), o.get("clipvalue")
    )
    scale = o.get("lr_scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0 or not math.isfinite(scale):
        raise ConfigError(
            f"optimizer.lr_scale={scale!r} must be a finite number > 0 (it multiplies "
            f"optimizer.learning_rate={o.learning_rate})"
        )
    if cfg.data.name not in data.DATASETS:
        raise unknown("dataset", cfg.data.name, data.DATASETS)
    if cfg.diagnostics.level not in diag.LEVELS:
        raise unknown("diagnostics level", cfg.diagnostics.level, diag.LEVELS)
    bs = cfg.train.batch_size
    if not (bs == "full" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1)):
        raise ConfigError(
            f"train.batch_size={bs!r} must be 'full' (batch gradient descent), "
            "1 (stochastic) or an integer N > 1 (mini-batch)"
        )
    spe = cfg.train.get("steps_per_execution", 1)
    if not isinstance(spe, int) or isinstance(spe, bool) or spe < 1:
        raise ConfigError(f"train.steps_per_execution={spe!r} must be an integer >= 1")
    wait = cfg.tracking.get("wait_s", 300)
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait < math.inf:
        raise ConfigError(f"tracking.wait_s={wait!r} must be a finite number of seconds >= 0")
    losses.check(cfg.train.get("loss", "cross_entropy"))
    if o.name == "newton" and cfg.train.get("mixed_precision"):
        raise ConfigError("optimizer=newton runs in float32: set train.mixed_precision=false")
    check_curvature(cfg.diagnostics.get("curvature") or {})
    if not isinstance(cfg.train.epochs, int) or isinstance(cfg.train.epochs, bool) or cfg.train.epochs < 0:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs!r} must be an integer >= 1, or 0 (no training: the signal probe "
            "at initialisation only)"
        )
    thresholds(cfg)


def check_curvature(cc) -> None:
    """`diagnostics.curvature.*`: integers in range, examples a positive integer or null."""
    for key, lo in (("every_n_steps", 0), ("iterations", 1), ("top_k", 1), ("trace_samples", 0)):
        v = cc.get(key, lo)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ConfigError(f"diagnostics.curvature.{key}={v!r} must be an integer >= {lo}")
    n = cc.get("examples")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"diagnostics.curvature.examples={n!r} must be an integer >= 1 or null (all)")
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
