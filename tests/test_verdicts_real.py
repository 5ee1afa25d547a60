"""Verdicts on real, small trainings: each label where the evidence says it belongs."""

import math

import pytest
from helpers.mlflow_queries import runs

from study.train import train

pytestmark = pytest.mark.slow

LEARNS = [
    "data.options.n_train=768",
    "data.options.n_test=128",
    "data.options.image_size=16",
    "model.width=8",
    "train.epochs=4",
    "optimizer=adam",
    "optimizer.learning_rate=0.005",
]  # a task these nets learn


@pytest.mark.parametrize(
    "overrides, allowed",
    [
        (["model.activation=relu", "model.depth=16", "optimizer=sgd", "train.epochs=2"], {"collapsed", "died"}),
        (["model.activation=sigmoid", "model.depth=12", "optimizer=sgd", "train.epochs=2"], {"collapsed", "vanishing"}),
        (["model.activation=sigmoid", "model.depth=2", "optimizer=sgd", "train.epochs=2"], {"stalled"}),
        (["optimizer=sgd", "optimizer.learning_rate=1e4", "model.activation=leaky_relu"], {"diverged", "exploding"}),
        ([*LEARNS, "model.activation=relu", "model.depth=12", "mitigation=batch_norm"], {"healthy"}),
        ([*LEARNS, "model.activation=tanh", "model.depth=4"], {"healthy"}),
        ([*LEARNS, "model.activation=elu", "model.depth=4", "model.init=he_normal"], {"healthy"}),
    ],
    ids=["relu-glorot-deep", "sigmoid-deep", "sigmoid-shallow", "absurd-lr", "batchnorm-deep", "tanh", "elu"],
)
def test_verdict_of_a_real_run(make_cfg, store, overrides, allowed):
    result = train(make_cfg(*overrides))
    (run,) = runs(store[1])
    tags, m = run.data.tags, run.data.metrics
    assert tags["gradient_verdict"] == result["gradient_verdict"] and tags["gradient_verdict"] in allowed, tags[
        "verdict_reason"
    ]
    assert tags["verdict_reason"] == result["verdict_reason"] and any(ch.isdigit() for ch in tags["verdict_reason"])
    assert tags["init_finding"] == result["init_finding"] in ("none", "vanishing", "collapsed", "exploding")
    if tags["gradient_verdict"] in ("vanishing", "collapsed"):  # a bad start: found at initialisation
        assert tags["init_finding"] == tags["gradient_verdict"]
    if tags["outcome"] == "finished":  # the evidence is recorded as metrics, once
        assert {"diag/progress", "diag/forward_ratio_init", "diag/backprop_ratio_init", "diag/grad_growth"} <= set(m)
        assert m["diag/progress"] == pytest.approx(1 - m["val/loss"] / math.log(4))
