"""Optimizer registry and learning-rate schedules, from plain arguments.

Each optimizer's YAML (conf/optimizer/<name>.yaml) carries its own default learning rate, so a
grid over optimizers compares each at a sensible step size. Schedules are given in epochs and
converted to steps here.
"""

from __future__ import annotations

import math

import keras

from study.errors import ConfigError, unknown
from study.newton import Newton

# `params` (conf/optimizer/<name>.yaml, the one place their values are set) go to Keras by name; a
# parameter a YAML leaves out takes Keras's own default, except those REQUIRED (SGD's momentum is 0)
OPTIMIZERS = {
    "sgd": lambda lr, p, kw: keras.optimizers.SGD(lr, **p, **kw),
    "momentum": lambda lr, p, kw: keras.optimizers.SGD(lr, **p, **kw),
    "nesterov": lambda lr, p, kw: keras.optimizers.SGD(lr, nesterov=True, **p, **kw),
    "adagrad": lambda lr, p, kw: keras.optimizers.Adagrad(lr, **kw),
    "rmsprop": lambda lr, p, kw: keras.optimizers.RMSprop(lr, **p, **kw),
    "adam": lambda lr, p, kw: keras.optimizers.Adam(lr, **p, **kw),
    "adamw": lambda lr, p, kw: keras.optimizers.AdamW(lr, **p, **kw),
    "nadam": lambda lr, p, kw: keras.optimizers.Nadam(lr, **kw),
    "lion": lambda lr, p, kw: keras.optimizers.Lion(lr, **p, **kw),
    "newton": lambda lr, p, kw: Newton(lr, **p),  # damped Newton-CG (study/newton.py), small models
}
REQUIRED = {"momentum": {"momentum"}, "nesterov": {"momentum"}}
PARAMS = {  # weight_decay: Keras's decoupled w <- w - lr·λ·w each step (not an L2 term in the loss)
    "sgd": {"weight_decay"},
    "momentum": {"momentum", "weight_decay"},
    "nesterov": {"momentum", "weight_decay"},
    "rmsprop": {"rho"},
    "adam": {"beta_1", "beta_2"},
    "lion": {"beta_1", "beta_2"},
    "adamw": {"weight_decay"},
    "newton": {
        "damping",
        "cg_iters",
        "cg_tol",
        "adapt_damping",
        "min_damping",
        "max_damping",
        "max_params",
        "backtracks",
    },
}
SCHEDULES = ("constant", "exponential", "step", "cosine")
SCHEDULE_KEYS = {  # each schedule's keys (besides `name`), all required: conf/schedule/<name>.yaml sets them
    "constant": (),
    "exponential": ("decay_rate", "decay_epochs"),
    "step": ("decay_rate", "decay_epochs"),
    "cosine": ("alpha",),
}


def check_schedule(name: str, keys: dict) -> None:
    """The schedule's keys, before training: each it needs present, none it does not know."""
    if name not in SCHEDULES:
        raise unknown("schedule", name, SCHEDULES)
    known = ("decay_rate", "decay_epochs", "alpha")
    extra = sorted(set(keys) - set(known))
    if extra:
        raise ConfigError(f"schedule.{extra[0]} is not a schedule key; valid: {', '.join(known)}")
    missing = [k for k in SCHEDULE_KEYS[name] if keys.get(k) is None]
    if missing:
        raise ConfigError(f"schedule {name!r} needs schedule.{missing[0]} (conf/schedule/{name}.yaml sets it)")


def check(name: str, learning_rate: float, params: dict, schedule: str, clipnorm, clipvalue) -> None:
    """Fail before training, naming the bad value and the valid choices."""
    if name not in OPTIMIZERS:
        raise unknown("optimizer", name, OPTIMIZERS)
    if (
        not isinstance(learning_rate, (int, float))
        or isinstance(learning_rate, bool)
        or not learning_rate > 0
        or not math.isfinite(learning_rate)
    ):
        raise ConfigError(f"optimizer.learning_rate={learning_rate!r} must be a finite number > 0")
    extra = set(params) - PARAMS.get(name, set())
    if extra:
        raise ConfigError(
            f"optimizer {name!r} takes no parameter {sorted(extra)}; "
            f"valid: {sorted(PARAMS.get(name, set())) or ['none']}"
        )
    missing = REQUIRED.get(name, set()) - set(params)
    if missing:
        raise ConfigError(
            f"optimizer {name!r} needs optimizer.params.{sorted(missing)[0]} (conf/optimizer/{name}.yaml)"
        )
    if schedule not in SCHEDULES:
        raise unknown("schedule", schedule, SCHEDULES)
    for what, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue)):
        if v is not None and not v > 0:
            raise ConfigError(f"optimizer.{what}={v} must be > 0 or null")
        if v is not None and name == "newton":
            raise ConfigError(
                f"optimizer.{what}={v}: optimizer=newton takes no gradient clipping (its damping "
                "bounds the step); set it to null or choose another optimizer"
            )
    if name == "newton":
        Newton(learning_rate, **params)  # its own checks, naming the bad parameter


def schedule(
    name: str,
    learning_rate: float,
    steps_per_epoch: int,
    epochs: int,
    *,
    decay_rate: float | None = None,
    decay_epochs: float | None = None,
    alpha: float | None = None,
):
    """A learning rate (float) or a Keras schedule; `decay_epochs` is the period of exponential
    and step decay, `decay_rate` its factor, `alpha` the final fraction of the cosine schedule. Their
    values come from the schedule's YAML (conf/schedule/), the one place they are set."""

    def needed(key: str, value):
        if value is None:
            raise ConfigError(f"schedule {name!r} needs schedule.{key} (conf/schedule/{name}.yaml sets it)")
        return value

    if name == "constant":
        return learning_rate
    if name in ("exponential", "step"):
        decay_steps = max(1, int(math.ceil(needed("decay_epochs", decay_epochs) * steps_per_epoch)))
        rate = needed("decay_rate", decay_rate)
        return keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps, rate, staircase=name == "step")
    if name == "cosine":
        total = max(1, steps_per_epoch * epochs)
        return keras.optimizers.schedules.CosineDecay(learning_rate, total, alpha=needed("alpha", alpha))
    raise unknown("schedule", name, SCHEDULES)


def build(name: str, learning_rate, params: dict | None = None, *, clipnorm=None, clipvalue=None):
    """An optimizer; `learning_rate` may be a float or a Keras schedule."""
    if name not in OPTIMIZERS:
        raise unknown("optimizer", name, OPTIMIZERS)
    clip = {k: v for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue)) if v is not None}
    return OPTIMIZERS[name](learning_rate, params or {}, clip)
