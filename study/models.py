"""Model builders: a plain CNN (and an MLP), from plain typed arguments.

Layer names are part of the contract with the diagnostics and the report: weight layers are
`conv_01` ... `conv_NN`, then `dense_01` ... in the head and `logits`; each activation layer is
named after the layer it follows with `act_` (`act_conv_03`). Indices count from the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from study import activations, meanfield
from study.errors import ConfigError, unknown

INITIALIZERS = {  # name -> (spec -> initializer)
    "glorot_uniform": lambda spec: keras.initializers.GlorotUniform(),
    "glorot_normal": lambda spec: keras.initializers.GlorotNormal(),
    "he_normal": lambda spec: keras.initializers.HeNormal(),
    "he_uniform": lambda spec: keras.initializers.HeUniform(),
    "lecun_normal": lambda spec: keras.initializers.LecunNormal(),
    "small_normal": lambda spec: keras.initializers.RandomNormal(stddev=spec.init_std),
    # Glorot & Bengio (2010) eq. 1, the "standard" initialisation: U[-1/sqrt(fan_in), 1/sqrt(fan_in)]
    "standard_uniform": lambda spec: keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
    # N(0, init_scale / fan_in), untruncated: mean-field theory's σ_w² = init_scale (study/meanfield.py)
    "scaled_normal": lambda spec: keras.initializers.VarianceScaling(spec.init_scale, "fan_in", "untruncated_normal"),
}
MAX_POOLS = 2  # 28 -> 14 -> 7: every depth from 1 to 32 (and more) stays valid on 28×28 inputs


POOLS = {"max": keras.layers.MaxPooling2D, "average": keras.layers.AveragePooling2D}


@dataclass
class ModelSpec:
    """Everything a builder needs; `config.model_spec` fills it from the Hydra config."""

    depth: int = 4
    width: int = 16
    kernel_size: int = 3
    activation: str = "relu"
    activation_params: dict = field(default_factory=dict)
    init: str = "glorot_uniform"
    init_std: float = 0.01
    init_scale: float = 1.0
    max_pools: int = MAX_POOLS
    pooling: str = "max"  # the CNN's 2×2 pools between stages: max or average
    pool_after: list[int] | None = None  # the conv indices the pools follow (None: equal stages)
    double_at_pool: bool = True  # the CNN's channels double after each pool
    batch_norm: bool = False
    bn_momentum: float = 0.99
    residual: bool = False
    dropout: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    head_units: list[int] = field(default_factory=list)
    kind: str = "cnn"


def check(spec: ModelSpec) -> None:
    """Fail before training, naming the bad value and the valid choices."""
    if spec.kind not in BUILDERS:
        raise unknown("model", spec.kind, BUILDERS)
    activations.check(spec.activation, spec.activation_params)
    if spec.init not in INITIALIZERS:
        raise unknown("initializer", spec.init, INITIALIZERS)
    if not isinstance(spec.depth, int) or spec.depth < 1:
        raise ConfigError(f"model.depth={spec.depth!r} must be an integer >= 1")
    if spec.width < 1 or spec.kernel_size < 1:
        raise ConfigError(f"model.width={spec.width} and model.kernel_size={spec.kernel_size} must be >= 1")
    if not spec.init_scale > 0:
        raise ConfigError(f"model.init_scale={spec.init_scale} must be > 0 (σ_w² of init=scaled_normal)")
    if spec.pooling not in POOLS:
        raise unknown("model.pooling", spec.pooling, POOLS)
    if not isinstance(spec.max_pools, int) or not 0 <= spec.max_pools <= MAX_POOLS:
        raise ConfigError(f"model.max_pools={spec.max_pools!r} must be an integer from 0 to {MAX_POOLS}")
    if spec.pool_after is not None:
        after = list(spec.pool_after)
        if len(after) > MAX_POOLS or after != sorted(set(after)) or any(not 1 <= i <= spec.depth for i in after):
            raise ConfigError(
                f"model.pool_after={after} must list at most {MAX_POOLS} increasing conv indices "
                f"from 1 to model.depth={spec.depth} (or be null: pools split the depth into equal stages)"
            )
    if not 0.0 <= spec.bn_momentum < 1.0:
        raise ConfigError(f"model.bn_momentum={spec.bn_momentum} must be in [0, 1) (Keras's default 0.99)")
    if not 0.0 <= spec.dropout < 1.0:
        raise ConfigError(f"model.dropout={spec.dropout} must be in [0, 1)")
    if spec.l1 < 0 or spec.l2 < 0:
        raise ConfigError(f"model.l1={spec.l1} and model.l2={spec.l2} must be >= 0")
    if any(u < 1 for u in spec.head_units):
        raise ConfigError(f"model.head_units={list(spec.head_units)} must all be >= 1")


def _regularizer(spec: ModelSpec):
    if spec.l1 == 0 and spec.l2 == 0:
        return None
    return keras.regularizers.L1L2(l1=spec.l1, l2=spec.l2)


def _stage_ends(spec: ModelSpec) -> set[int]:
    return meanfield.stage_ends(spec.depth, spec.max_pools, spec.pool_after)


def _block(x, layer, name: str, spec: ModelSpec, skip: bool = False):
    """layer -> [batch norm] -> activation [-> + input, when `skip`: an identity residual connection]."""
    h = layer(x)
    if spec.batch_norm:
        h = keras.layers.BatchNormalization(momentum=spec.bn_momentum, name=f"bn_{name}")(h)
    h = activations.make(spec.activation, f"act_{name}", spec.activation_params)(h)
    return keras.layers.Add(name=f"add_{name}")([x, h]) if skip else h


def _head(x, spec: ModelSpec, num_classes: int):
    for i, units in enumerate(spec.head_units, start=1):
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{i:02d}")(x)
        dense = keras.layers.Dense(
            units,
            kernel_initializer=INITIALIZERS[spec.init](spec),
            kernel_regularizer=_regularizer(spec),
            name=f"dense_{i:02d}",
        )
        x = _block(x, dense, f"dense_{i:02d}", spec)
    if spec.dropout:
        x = keras.layers.Dropout(spec.dropout, name="dropout_logits")(x)
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=INITIALIZERS[spec.init](spec),
        kernel_regularizer=_regularizer(spec),
        name="logits",
    )(x)


def build_cnn(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """`depth` conv layers ('same' padding) with `width` filters, doubled (unless not
    `double_at_pool`) after each of at most `max_pools` (default two) 2×2 pools, max or average
    (`pooling`), placed to split the depth into equal stages or after the conv layers `pool_after`
    names (e.g. [1, 2]: an early downsampled start, then most layers at a quarter of the side); global
    average pooling;
    optional dense head layers with the same activation; a linear `logits` layer. With `residual`,
    every conv block whose input has as many channels as its output adds its input back (identity
    skip, `add_conv_NN`); the first conv and the first after each pool have none."""
    inputs = keras.Input(shape=input_shape, name="image")
    x, filters, ends = inputs, spec.width, _stage_ends(spec)
    for i in range(1, spec.depth + 1):
        conv = keras.layers.Conv2D(
            filters,
            spec.kernel_size,
            padding="same",
            kernel_initializer=INITIALIZERS[spec.init](spec),
            kernel_regularizer=_regularizer(spec),
            name=f"conv_{i:02d}",
        )
        x = _block(x, conv, f"conv_{i:02d}", spec, skip=spec.residual and x.shape[-1] == filters)
        if i in ends:
            x = POOLS[spec.pooling](2, name=f"pool_{i:02d}")(x)
            filters *= 2 if spec.double_at_pool else 1
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, _head(x, spec, num_classes), name=f"cnn_d{spec.depth}")


def build_mlp(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """`depth` dense hidden layers of `width` units on the flattened image, then `logits`."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i in range(1, spec.depth + 1):
        dense = keras.layers.Dense(
            spec.width,
            kernel_initializer=INITIALIZERS[spec.init](spec),
            kernel_regularizer=_regularizer(spec),
            name=f"dense_{i:02d}",
        )
        x = _block(x, dense, f"dense_{i:02d}", spec, skip=spec.residual and x.shape[-1] == spec.width)
    spec_no_head = ModelSpec(**{**spec.__dict__, "head_units": []})
    return keras.Model(inputs, _head(x, spec_no_head, num_classes), name=f"mlp_d{spec.depth}")


BUILDERS = {"cnn": build_cnn, "mlp": build_mlp}


def build(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    check(spec)
    return BUILDERS[spec.kind](spec, input_shape, num_classes)
