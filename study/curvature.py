"""Second-order information about the training loss: Hessian-vector products, the top Hessian
eigenvalues (sharpness, by Lanczos) and the trace (Hutchinson), for any harness model.

The Hessian H of the loss L(w) (the model's compiled loss on a batch, regularisation included) is
never formed: `HessianVectorProduct` computes H v by double backprop (the gradient of g(w)·v), on
one fixed batch or on a large one in chunks (the loss is a mean, so H of the whole is the
size-weighted mean of the chunks' H). Lanczos with full reorthogonalisation (in float64 on the host)
turns k HVPs into Ritz values whose largest converges to λ_max fast (Golub & Van Loan, ch. 10).

Gradient descent with step η is unstable along an eigenvector with λ > 2/η (on a quadratic);
Cohen et al. (ICLR 2021) find that full-batch GD on neural networks drives λ_max up to about 2/η
and hovers there (the edge of stability). `two_over_lr` is that threshold.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _has_dropout(model: keras.Model) -> bool:
    return any(isinstance(l, keras.layers.Dropout) and l.rate > 0 for l in model.layers)


class HessianVectorProduct:
    """v -> H v for the training loss of `model` on (x, y), v and H v as flat float64 vectors in
    the order of `model.trainable_weights`.

    Forward mode: training, as the train step computes the loss (batch norm with batch statistics;
    its moving statistics are restored after each product, so nothing the training sees changes),
    except that dropout is off (`training=False` when the model has dropout), so H is a fixed
    matrix. The batch is cut into chunks of at most `chunk` examples."""

    def __init__(self, model: keras.Model, x, y, chunk: int = 1024):
        self.model = model
        self.weights = list(model.trainable_weights)
        self.shapes = [tuple(w.shape) for w in self.weights]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.n = int(sum(self.sizes))
        self.training = not _has_dropout(model)
        x, y = np.asarray(x), np.asarray(y)
        self.chunks = [
            (tf.convert_to_tensor(x[i : i + chunk]), tf.convert_to_tensor(y[i : i + chunk]))
            for i in range(0, len(x), chunk)
        ]
        self.fractions = [len(cx) / len(x) for cx, _ in self.chunks]
        self._fn = tf.function(self._hvp_chunk, reduce_retracing=True)
        self.calls = 0

    def _loss(self, x, y):
        y_pred = self.model(x, training=self.training)
        return self.model._compute_loss(x=x, y=y, y_pred=y_pred, training=self.training)

    def _hvp_chunk(self, x, y, v):
        parts = tf.split(v, self.sizes)
        vs = [tf.reshape(p, s) for p, s in zip(parts, self.shapes)]
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = self._loss(x, y)
            grads = inner.gradient(loss, self.weights)
            gv = tf.add_n([tf.reduce_sum(tf.cast(g, v.dtype) * u) for g, u in zip(grads, vs)])
        hv = outer.gradient(gv, self.weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, tf.concat([tf.reshape(tf.cast(h, v.dtype), [-1]) for h in hv], 0)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        saved = [w.value for w in self.model.non_trainable_variables]
        out = np.zeros(self.n)
        v = tf.convert_to_tensor(np.asarray(v, self.weights[0].dtype))
        for (x, y), frac in zip(self.chunks, self.fractions):
            out += frac * self._fn(x, y, v)[1].numpy().astype(np.float64)
        for w, value in zip(self.model.non_trainable_variables, saved):
            w.assign(value)
        self.calls += 1
        return out


def lanczos(matvec, n: int, iterations: int, seed: int = 0) -> np.ndarray:
    """Ritz values (ascending) of the symmetric operator `matvec` on R^n after `iterations` steps of
    Lanczos with full reorthogonalisation, from a seeded random start. Extreme eigenvalues converge
    first; with iterations >= n the values are the spectrum (up to round-off)."""
    m = max(1, min(int(iterations), n))
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(n)
    q /= np.linalg.norm(q)
    basis = np.zeros((m, n))
    alpha, beta = np.zeros(m), np.zeros(m)
    for j in range(m):
        basis[j] = q
        w = matvec(q)
        alpha[j] = q @ w
        w = w - alpha[j] * q - (beta[j - 1] * basis[j - 1] if j else 0.0)
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)  # twice is enough (Kahan)
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta[j] = np.linalg.norm(w)
        if j + 1 == m or beta[j] <= 1e-10 * max(1.0, abs(alpha[j])):
            m = j + 1
            break
        q = w / beta[j]
    t = np.diag(alpha[:m]) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    return np.linalg.eigvalsh(t)


def hutchinson_trace(matvec, n: int, samples: int, seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate of tr(H) = E[zᵀHz], z Rademacher: (mean, standard error) over `samples`."""
    rng = np.random.default_rng(seed + 7919)
    values = []
    for _ in range(int(samples)):
        z = rng.choice([-1.0, 1.0], size=n)
        values.append(float(z @ matvec(z)))
    values = np.asarray(values)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def explicit_hessian(model: keras.Model, x, y) -> np.ndarray:
    """The n × n Hessian of the loss by n HVPs with the unit vectors: for tiny models and tests."""
    hvp = HessianVectorProduct(model, x, y)
    eye = np.eye(hvp.n)
    return np.stack([hvp(e) for e in eye], axis=1)


def two_over_lr(optimizer_name: str, learning_rate: float, momentum: float | None = None) -> float | None:
    """The step size's stability threshold on a quadratic: 2/η for gradient descent (`sgd`), and
    (2 + 2β)/η for heavy-ball momentum β (`momentum`; Cohen et al. 2021, Appendix); None where no
    such threshold is defined (adaptive methods, Newton)."""
    if optimizer_name == "sgd":
        return 2.0 / learning_rate
    if optimizer_name == "momentum":
        return (2.0 + 2.0 * (0.9 if momentum is None else momentum)) / learning_rate
    return None


def measure(hvp: HessianVectorProduct, iterations: int, top_k: int, trace_samples: int, seed: int) -> dict:
    """{lambda_max, lambda_min, lambda_2 ... lambda_k, trace, trace_se, hvps}: the curvature of one
    moment of training."""
    calls = hvp.calls
    ritz = lanczos(hvp, hvp.n, iterations, seed)
    out = {"lambda_max": float(ritz[-1]), "lambda_min": float(ritz[0])}
    for i in range(2, min(int(top_k), len(ritz)) + 1):
        out[f"lambda_{i}"] = float(ritz[-i])
    if trace_samples:
        out["trace"], out["trace_se"] = hutchinson_trace(hvp, hvp.n, trace_samples, seed)
    out["hvps"] = float(hvp.calls - calls)
    return out
