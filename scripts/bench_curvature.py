"""Cost of the second-order tools, in one process, interleaved repeats, medians:

- a curvature measurement (`diagnostics.curvature`: λ_max by `--iterations` Lanczos HVPs on
  `--examples` training examples) against one train step of the same cell (batch `--batch-size`):
  the measurement in train steps, and the slow-down of a run measuring every N steps;
- one Hessian-vector product, and one loss evaluation (a forward pass), against one gradient on
  the same examples: inside one traced loop, as in a Newton step's CG iterations
  (`hvp_over_gradient`, `forward_over_gradient`: second_order counts a Newton step's
  gradient-equivalents by these), and as single calls from the host (`*_call_over_gradient_call`);
- one `optimizer=newton` step against one SGD step on the same full batch (`--newton-examples`).

Models: the default grid's depth-8 ReLU CNN (width 8), the second_order preset's tanh MLP and CNN
(3 layers of width 16), the edge_of_stability preset's tanh MLP (2 × 200). Fashion-MNIST.
Writes reports/benchmarks/curvature.json; the last line is
`curvature lambda_max_in_steps=<grid cell> newton_over_sgd=<mlp>/<cnn>`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from study import curvature, data, losses, models, outputs, tracking  # noqa: E402
from study import diagnostics as diag  # noqa: E402
from study.newton import Newton  # noqa: E402

MODELS = {
    "grid_cnn_d8": models.ModelSpec(depth=8, width=8, activation="relu"),
    "second_order_mlp": models.ModelSpec(kind="mlp", depth=3, width=16, activation="tanh"),
    "second_order_cnn": models.ModelSpec(kind="cnn", depth=3, width=16, activation="tanh"),
    "eos_mlp": models.ModelSpec(kind="mlp", depth=2, width=200, activation="tanh", init="standard_uniform"),
}


def compiled(spec, splits, optimizer):
    keras.utils.set_random_seed(0)
    base = models.build(spec, splits.input_shape, splits.num_classes)
    m = diag.DiagnosticModel(base.inputs, base.outputs)
    m.compile(optimizer=optimizer, loss=losses.build("cross_entropy", splits.num_classes))
    m.enable_diagnostics("off", spec.activation)
    return m


def timed(fn, reps: int) -> float:
    fn()  # warm-up: tracing
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def in_graph(m, xs, ys, reps: int, k: int = 16) -> dict:
    """Seconds of one gradient, one Hessian-vector product (the double tape of study/newton.py) and
    one loss evaluation, each the median of `reps` calls of a traced loop of `k` chained ones, / k."""
    weights = m.trainable_weights
    shapes = [tuple(w.shape) for w in weights]
    sizes = [int(np.prod(s)) for s in shapes]

    def loss_at(a):
        return m._compute_loss(x=a, y=ys, y_pred=m(a, training=True), training=True)

    def flat(ts):
        return tf.concat([tf.reshape(t, [-1]) for t in ts], 0)

    def nudge(i):  # a loop-dependent input: no iteration can be hoisted out of the loop
        return xs + tf.cast(i, xs.dtype) * 1e-12

    @tf.function
    def gradients():
        def body(i, acc):
            with tf.GradientTape() as t:
                loss = loss_at(nudge(i))
            return i + 1, acc + tf.reduce_sum(flat(t.gradient(loss, weights)))

        return tf.while_loop(lambda i, _: i < k, body, (tf.constant(0), tf.constant(0.0)))[1]

    @tf.function
    def hvps(v0):
        def body(i, v):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = loss_at(xs)
                gs = inner.gradient(loss, weights)
                gv = tf.add_n([tf.reduce_sum(g * tf.reshape(u, s)) for g, u, s in zip(gs, tf.split(v, sizes), shapes)])
            hv = flat(outer.gradient(gv, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO))
            return i + 1, hv / (tf.norm(hv) + 1e-12)

        return tf.while_loop(lambda i, _: i < k, body, (tf.constant(0), v0))[1]

    @tf.function
    def forwards():
        def body(i, acc):
            return i + 1, acc + loss_at(nudge(i))

        return tf.while_loop(lambda i, _: i < k, body, (tf.constant(0), tf.constant(0.0)))[1]

    v0 = tf.random.stateless_normal([sum(sizes)], seed=[0, 0])
    return {
        "in_graph_gradient_s": timed(lambda: gradients().numpy(), reps) / k,
        "in_graph_hvp_s": timed(lambda: hvps(v0).numpy(), reps) / k,
        "in_graph_forward_s": timed(lambda: forwards().numpy(), reps) / k,
    }


def measure_model(name: str, spec, splits, args) -> dict:
    """The timings of one model (see the module's docstring)."""
    x, y = splits.x_train[: args.examples], splits.y_train[: args.examples]
    xb, yb = splits.x_train[: args.batch_size], splits.y_train[: args.batch_size]
    m = compiled(spec, splits, keras.optimizers.SGD(0.01))
    hvp = curvature.HessianVectorProduct(m, x, y)
    v = np.random.default_rng(0).standard_normal(hvp.n)
    xs, ys = tf.convert_to_tensor(x), tf.convert_to_tensor(y)

    @tf.function
    def grad_fn(a, b):
        return tf.gradients(m._compute_loss(x=a, y=b, y_pred=m(a, training=True), training=True), m.trainable_weights)

    @tf.function
    def loss_fn(a, b):
        return m._compute_loss(x=a, y=b, y_pred=m(a, training=True), training=True)

    r = {"parameters": hvp.n}
    r["train_step_s"] = timed(lambda: m.train_on_batch(xb, yb), args.reps * 5)
    r["gradient_s"] = timed(lambda: [g.numpy() for g in grad_fn(xs, ys)], args.reps)
    r["hvp_s"] = timed(lambda: hvp(v), args.reps)
    r["forward_s"] = timed(lambda: loss_fn(xs, ys).numpy(), args.reps)
    r["lambda_max_s"] = timed(lambda: curvature.measure(hvp, args.iterations, 1, 0, 0), args.reps)
    # one call each from the host (curvature.measure's HVPs are such calls)
    r["hvp_call_over_gradient_call"] = r["hvp_s"] / r["gradient_s"]
    r["forward_call_over_gradient_call"] = r["forward_s"] / r["gradient_s"]
    # inside one traced function, as in a Newton step's CG loop: what second_order counts by
    inside = in_graph(m, xs, ys, args.reps)
    r |= inside
    r["hvp_over_gradient"] = inside["in_graph_hvp_s"] / inside["in_graph_gradient_s"]
    r["forward_over_gradient"] = inside["in_graph_forward_s"] / inside["in_graph_gradient_s"]
    r["lambda_max_in_train_steps"] = r["lambda_max_s"] / r["train_step_s"]
    r[f"slowdown_every_{args.every}_steps"] = 1 + r["lambda_max_s"] / (args.every * r["train_step_s"])
    if name.startswith("second_order"):
        xn, yn = (tf.convert_to_tensor(a[: args.newton_examples]) for a in (splits.x_train, splits.y_train))
        steppers = {
            "sgd": compiled(spec, splits, keras.optimizers.SGD(0.05)),
            "newton": compiled(spec, splits, Newton()),
        }
        times = {k: [] for k in steppers}
        for mm in steppers.values():
            mm.train_on_batch(xn, yn)  # tracing
        for rep in range(args.reps):  # interleaved, order alternating
            for k in sorted(steppers, reverse=rep % 2 == 1):
                t = time.perf_counter()
                steppers[k].train_on_batch(xn, yn)
                times[k].append(time.perf_counter() - t)
        r["sgd_full_batch_step_s"] = statistics.median(times["sgd"])
        r["newton_step_s"] = statistics.median(times["newton"])
        r["newton_over_sgd"] = r["newton_step_s"] / r["sgd_full_batch_step_s"]
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=1024)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--newton-examples", type=int, default=1024)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--every", type=int, default=50, help="a run measuring every N steps: its slow-down")
    p.add_argument("--out", default=str(tracking.REPO_ROOT / "reports" / "benchmarks" / "curvature.json"))
    args = p.parse_args()
    outputs.result_file(args.out)  # before minutes of measuring
    splits = data.load("fashion_mnist", seed=0, train_subset=max(args.examples, args.newton_examples))
    results = {}
    for name, spec in MODELS.items():
        results[name] = measure_model(name, spec, splits, args)
        print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results[name].items()}))
    out = {"results": results, "config": vars(args), "machine": tracking.machine()}
    outputs.write_json(args.out, out)
    print(
        f"curvature lambda_max_in_steps={results['grid_cnn_d8']['lambda_max_in_train_steps']:.0f} "
        f"newton_over_sgd={results['second_order_mlp']['newton_over_sgd']:.1f}/"
        f"{results['second_order_cnn']['newton_over_sgd']:.1f}"
    )


if __name__ == "__main__":
    main()
