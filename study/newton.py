"""`optimizer=newton`: a damped Newton method (truncated Newton-CG with Levenberg–Marquardt damping)
for small models, as a Keras optimizer the harness's train step drives.

One step on the batch's loss L(w) with gradient g and Hessian H (never formed; Hessian-vector
products by double backprop): conjugate gradients solve (H + λI) d = -g for at most `cg_iters`
iterations or until the residual is below `cg_tol` |g|, stopping early where p'(H + λI)p <= 0
(negative curvature: the iterate so far, or at the first iteration the gradient step
-g / (λ + |g'Hg| / |g|²)). The step is t η d (η the learning rate, default 1), t the first of 1, 1/2,
1/4, ... (`backtracks` tries) that lowers the batch's loss; if none does, no step is taken. The
damping λ adapts as Levenberg–Marquardt / Martens (2010) do, from ρ = (L(w + tη d) - L(w)) / q,
q = tη g·d + (tη)²/2 d'Hd the reduction the quadratic model predicts: ρ > 3/4 (with the full step)
-> λ × 2/3; ρ < 1/4, a shortened step or none -> λ × 3/2. Per step it costs one gradient, up to
`cg_iters` HVPs (each about two gradients) and one forward pass per try.

Batch norm's moving statistics are restored after the HVPs (only the train step's own forward pass
updates them); with dropout the curvature and the loss comparison use the network without dropout.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from study.errors import ConfigError

# recorded per step as `newton/<name>`: the damping λ used, CG iterations, ρ, whether a step was
# taken (1/0), whether CG met negative curvature (1/0), the fraction t of the Newton step taken
DIAG_STATS = ("damping", "cg_iterations", "rho", "accepted", "negative_curvature", "step_scale")
MAX_PARAMS = 250_000


def _flat(ts) -> tf.Tensor:
    return tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in ts], 0)


class Newton(keras.optimizers.Optimizer):
    """Damped Newton-CG; `minimize_batch(model, x, y, grads, loss)` takes one step (see module doc)."""

    def __init__(
        self,
        learning_rate=1.0,
        damping: float = 1.0,
        cg_iters: int = 20,
        cg_tol: float = 1e-2,
        adapt_damping: bool = True,
        min_damping: float = 1e-6,
        max_damping: float = 1e6,
        max_params: int = MAX_PARAMS,
        backtracks: int = 8,
        name: str = "newton",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        for key, v in (("damping", damping), ("min_damping", min_damping), ("max_damping", max_damping)):
            if not float(v) > 0:
                raise ConfigError(f"optimizer.params.{key}={v!r} must be > 0")
        if not isinstance(cg_iters, int) or cg_iters < 1:
            raise ConfigError(f"optimizer.params.cg_iters={cg_iters!r} must be an integer >= 1")
        if not 0 < float(cg_tol) < 1:
            raise ConfigError(f"optimizer.params.cg_tol={cg_tol!r} must be in (0, 1)")
        self.initial_damping, self.cg_iters, self.cg_tol = float(damping), int(cg_iters), float(cg_tol)
        self.adapt_damping, self.min_damping, self.max_damping = (
            bool(adapt_damping),
            float(min_damping),
            float(max_damping),
        )
        self.max_params = int(max_params)
        if not isinstance(backtracks, int) or backtracks < 1:
            raise ConfigError(f"optimizer.params.backtracks={backtracks!r} must be an integer >= 1")
        self.backtracks = int(backtracks)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.damping = self.add_variable(
            (), initializer=keras.initializers.Constant(self.initial_damping), name="damping"
        )
        self.last = self.add_variable((len(DIAG_STATS),), initializer="zeros", name="last_step")

    def update_step(self, gradient, variable, learning_rate):
        """`gradient` is minus the Newton direction (see `minimize_batch`): w <- w - η (-d)."""
        lr = keras.ops.cast(learning_rate, variable.dtype)
        self.assign_add(variable, -keras.ops.cast(gradient, variable.dtype) * lr)

    def check_size(self, model: keras.Model) -> None:
        n = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
        if n > self.max_params:
            raise ConfigError(
                f"optimizer=newton is for small models: this one has {n:,} parameters, the limit is "
                f"optimizer.params.max_params={self.max_params:,} (each step costs up to cg_iters="
                f"{self.cg_iters} Hessian-vector products); use a smaller model.width or model.depth, "
                "or raise the limit"
            )

    def minimize_batch(self, model: keras.Model, x, y, grads, loss):
        """One damped Newton step on the batch (x, y); `grads`, `loss` from the train step's tape.
        Returns nothing; `diag_values()` holds the step's damping, CG iterations, ρ, acceptance."""
        if not self.built:
            self.build(model.trainable_weights)
        weights = list(model.trainable_weights)
        shapes = [tuple(w.shape) for w in weights]
        sizes = [int(np.prod(s)) for s in shapes]
        training = not any(isinstance(l, keras.layers.Dropout) and l.rate > 0 for l in model.layers)
        state = [v.value for v in model.non_trainable_variables]

        def batch_loss():
            y_pred = model(x, training=training)
            return tf.cast(model._compute_loss(x=x, y=y, y_pred=y_pred, training=training), tf.float32)

        def unflat(v):
            return [tf.reshape(p, s) for p, s in zip(tf.split(v, sizes), shapes)]

        def hvp(v):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    lv = batch_loss()
                gs = inner.gradient(lv, weights)
                gv = tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32) * u) for g, u in zip(gs, unflat(v))])
            return _flat(outer.gradient(gv, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO))

        g = _flat(grads)
        lam = tf.cast(self.damping, tf.float32)
        loss0 = tf.cast(loss, tf.float32) if training else batch_loss()
        d, r, iters, neg = self._cg(lambda v: hvp(v) + lam * v, -g, lam)
        # (H + λI) d = -g - r, so d'Hd = d'(-g - r) - λ|d|²: no extra product for the model's prediction
        d_h_d = tf.reduce_sum(d * (-g - r)) - lam * tf.reduce_sum(d * d)
        lr = tf.cast(self.learning_rate, tf.float32)
        old = [tf.identity(w.value) for w in weights]
        steps = unflat(lr * d)

        def trial(k, found, t, loss1):
            t = tf.pow(0.5, tf.cast(k, tf.float32))
            for w, o, s_ in zip(weights, old, steps):
                w.assign(o + tf.cast(t * s_, w.dtype))
            loss_t = batch_loss()
            return k + 1, tf.math.is_finite(loss_t) & (loss_t < loss0), t, loss_t

        # backtracking on the batch's loss: the step, else half of it, ... (at most `backtracks` tries)
        _, accepted, t, loss1 = tf.while_loop(
            lambda k, found, t, loss1: (k < self.backtracks) & ~found,
            trial,
            (tf.constant(0), tf.constant(False), tf.constant(1.0), loss0),
        )
        for w, o in zip(weights, old):
            w.assign(o)
        for v, s_ in zip(model.non_trainable_variables, state):  # only the train step's pass moves them
            v.assign(s_)
        predicted = t * lr * tf.reduce_sum(g * d) + 0.5 * tf.square(t * lr) * d_h_d
        rho = tf.math.divide_no_nan(loss1 - loss0, predicted)
        if self.adapt_damping:
            poor = ~accepted | (t < 1.0) | (rho < 0.25)
            factor = tf.where(poor, 1.5, tf.where(rho > 0.75, 2.0 / 3.0, 1.0))
            self.damping.assign(tf.clip_by_value(lam * factor, self.min_damping, self.max_damping))
        keep = tf.cast(accepted, tf.float32) * t
        self.apply_gradients(zip([-s_ * keep for s_ in unflat(d)], weights))
        self.last.assign(
            tf.stack(
                [lam, tf.cast(iters, tf.float32), rho, tf.cast(accepted, tf.float32), tf.cast(neg, tf.float32), keep]
            )
        )

    def _cg(self, matvec, b, lam):
        """Conjugate gradients for A d = b from d = 0, stopping at negative curvature (see module
        doc); returns d, the residual b - A d, the iterations done and whether curvature was negative."""
        tol2 = tf.square(self.cg_tol) * tf.reduce_sum(b * b)
        zero = tf.zeros_like(b)

        def cond(i, d, r, p, rs, neg):
            return (i < self.cg_iters) & (rs > tol2) & ~neg

        def body(i, d, r, p, rs, neg):
            ap = matvec(p)
            pap = tf.reduce_sum(p * ap)
            bad = pap <= 0.0
            alpha = tf.math.divide_no_nan(rs, pap)
            first = tf.equal(i, 0)
            # negative curvature: keep the iterate so far; at the first iteration (p = b = -g) a
            # gradient step of size 1 / (λ + |g'Hg| / |g|²), whose residual is b - Ab/(...) = b - Ap/(...)
            scale = lam + tf.abs(tf.math.divide_no_nan(pap, tf.reduce_sum(b * b)) - lam)
            d_new = tf.where(bad, tf.where(first, b / scale, d), d + alpha * p)
            r_new = tf.where(bad, tf.where(first, b - ap / scale, r), r - alpha * ap)
            rs_new = tf.reduce_sum(r_new * r_new)
            p_new = r_new + tf.math.divide_no_nan(rs_new, rs) * p
            return i + 1, d_new, r_new, p_new, rs_new, bad

        i, d, r, _, _, neg = tf.while_loop(
            cond, body, (tf.constant(0), zero, b, b, tf.reduce_sum(b * b), tf.constant(False))
        )
        return d, r, i, neg

    @property
    def diag_stat_names(self) -> tuple[str, ...]:
        return tuple(f"newton/{s}" for s in DIAG_STATS)

    def diag_values(self) -> tf.Tensor:
        """The last step's [damping used, CG iterations, ρ, accepted (1/0), negative curvature (1/0)]."""
        return tf.cast(self.last, tf.float32) if self.built else tf.zeros(len(DIAG_STATS))

    def get_config(self):
        return super().get_config() | {
            "damping": self.initial_damping,
            "cg_iters": self.cg_iters,
            "cg_tol": self.cg_tol,
            "adapt_damping": self.adapt_damping,
            "min_damping": self.min_damping,
            "max_damping": self.max_damping,
            "max_params": self.max_params,
            "backtracks": self.backtracks,
        }
