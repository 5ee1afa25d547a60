"""Training losses by name (`train.loss`), from plain arguments.

`cross_entropy` (default): softmax cross-entropy on the logits. `mse`: mean squared error between
the outputs and one-hot targets, averaged over the K outputs (the main setting of Cohen et al. 2021,
the edge of stability). Labels are class ids either way; accuracy is the argmax's.
"""

from __future__ import annotations

import keras

from study.errors import unknown


class OneHotMSE(keras.losses.Loss):
    """mean_k (onehot(y)_k - f(x)_k)² per example."""

    def __init__(self, num_classes: int, name: str = "mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        target = keras.ops.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        return keras.ops.mean(keras.ops.square(target - y_pred), axis=-1)

    def get_config(self):
        return super().get_config() | {"num_classes": self.num_classes}


LOSSES = {
    "cross_entropy": lambda k: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "mse": lambda k: OneHotMSE(k),
}


def check(name: str) -> None:
    if name not in LOSSES:
        raise unknown("train.loss", name, LOSSES)


def build(name: str, num_classes: int) -> keras.losses.Loss:
    check(name)
    return LOSSES[name](num_classes)
