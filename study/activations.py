"""Activation registry: a name (plus parameters) -> a Keras activation layer.

Each activation is its own layer after the conv / dense layer, so diagnostics can read its output
h_l and the gradient dL/dh_l. Adding an activation is one entry in ACTIVATIONS (+ a test).
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from study.errors import ConfigError, unknown


def _plain(name: str) -> Callable[..., keras.layers.Layer]:
    def build(layer_name: str) -> keras.layers.Layer:
        return keras.layers.Activation(name, name=layer_name)

    return build


def _leaky_relu(layer_name: str, alpha: float = 0.01) -> keras.layers.Layer:
    return keras.layers.LeakyReLU(negative_slope=alpha, name=layer_name)


def _elu(layer_name: str, alpha: float = 1.0) -> keras.layers.Layer:
    return keras.layers.ELU(alpha=alpha, name=layer_name)


ACTIVATIONS: dict[str, Callable[..., keras.layers.Layer]] = {
    "sigmoid": _plain("sigmoid"),
    "tanh": _plain("tanh"),
    "relu": _plain("relu"),
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "selu": _plain("selu"),
    "gelu": _plain("gelu"),
    "swish": _plain("silu"),
    "softsign": _plain("softsign"),
}

# Families used by the diagnostics: bounded ones saturate, the ReLU family has dead units.
BOUNDED = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0)}
RELU_FAMILY = {"relu", "leaky_relu", "elu", "selu", "gelu", "swish"}

# Parameters each activation accepts (anything else is a configuration error).
PARAMS = {"leaky_relu": {"alpha"}, "elu": {"alpha"}}


def check(name: str, params: dict | None = None) -> None:
    """Fail early, naming the bad value and the valid choices."""
    if name not in ACTIVATIONS:
        raise unknown("activation", name, ACTIVATIONS)
    extra = set(params or {}) - PARAMS.get(name, set())
    if extra:
        valid = sorted(PARAMS.get(name, set())) or ["none"]
        raise ConfigError(f"activation {name!r} takes no parameter {sorted(extra)}; valid: {valid}")


def make(name: str, layer_name: str, params: dict | None = None) -> keras.layers.Layer:
    """A fresh activation layer named `layer_name`."""
    check(name, params)
    return ACTIVATIONS[name](layer_name, **(params or {}))
