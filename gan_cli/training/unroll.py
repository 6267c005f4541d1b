"""Unrolled GAN (Metz et al. 2017): the generator's loss through k look-ahead D updates.

With ``train.unroll_steps=k`` the generator step computes, inside its gradient tape,

    theta_D^0 = theta_D,   theta_D^{i+1} = U(theta_D^i, grad_theta L_D(theta_D^i; x, G(z)))   (i < k)

and the generator loss ``L_G(G(z); theta_D^k)``; its gradient w.r.t. G flows through all k
updates (second-order terms included), so G anticipates how D would react. The look-ahead works
on tensor copies: the real discriminator and its optimizer are not advanced.

``U`` is the discriminator optimizer's own rule (Keras Adam, RMSprop or SGD with momentum, as
Metz et al.'s code unrolls its Adam), applied functionally from the optimizer's current slots
(moments, iteration count, learning rate), followed by WGAN weight clipping when the loss clips.
The forward values are exactly what ``optimizer.apply_gradients`` would compute. In the
derivative the adaptive normaliser of Adam/RMSprop (``sqrt(v) + eps``, ``sqrt(v + eps)``) is held
constant: its derivative is infinite where a second moment is still 0, which would turn G's
gradient into NaN. ``L_D`` is the full discriminator objective of the run (loss family, gradient
penalty, R1). Every look-ahead step uses the same real batch (the round's last) and the same fake
batch (the generator step's own), as in Metz et al.'s code.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from gan_cli.core.errors import ConfigError


def base_optimizer(optimizer):
    """The optimizer whose rule updates the weights (unwraps a mixed-precision LossScaleOptimizer)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _slots(optimizer, variables, attribute: str) -> list[tf.Tensor] | None:
    # Keras 3 keeps an optimizer's per-weight state in private lists (``_momentums``, ``_velocities``, ...)
    # indexed by ``_get_variable_index``; it has no public accessor, and the unrolled look-ahead must start
    # from that state. tests/test_training_techniques.py checks the look-ahead against the optimizer's own
    # updates, so a Keras release that renames them fails there, not silently.
    slots = getattr(optimizer, attribute, None) or None
    if slots is None:
        return None
    return [tf.identity(slots[optimizer._get_variable_index(v)]) for v in variables]


def optimizer_state(optimizer, variables) -> dict:
    """The current slot values of ``optimizer`` for ``variables`` (tensors, same order as ``variables``)."""
    opt = base_optimizer(optimizer)
    if type(opt) is keras.optimizers.Adam:
        if opt.amsgrad:
            raise ConfigError("train.unroll_steps does not support Adam with amsgrad; use amsgrad=false")
        return {"m": _slots(opt, variables, "_momentums"), "v": _slots(opt, variables, "_velocities")}
    if type(opt) is keras.optimizers.RMSprop:
        return {"v": _slots(opt, variables, "_velocities"), "m": _slots(opt, variables, "_momentums"),
                "avg": _slots(opt, variables, "_average_gradients")}
    if isinstance(opt, keras.optimizers.SGD):  # includes the ramped-momentum SGD of gan_cli.training.momentum_sgd
        return {"m": _slots(opt, variables, "momentums")}
    raise ConfigError(f"train.unroll_steps supports the adam, rmsprop and sgd optimizers, not "
                      f"{type(opt).__name__}; change optimizer.discriminator or set train.unroll_steps=0")


def functional_update(optimizer, params: list, grads: list, state: dict, step: int) -> tuple[list, dict]:
    """One update of ``params`` (tensors) by ``optimizer``'s rule without touching any variable.

    ``step``: look-ahead index (0 = the update the optimizer would make next). Returns the new
    params and slot state. Mirrors keras.optimizers.{Adam, RMSprop, SGD}.update_step.
    """
    opt = base_optimizer(optimizer)
    lr = tf.cast(opt.learning_rate, tf.float32)
    t = tf.cast(opt.iterations, tf.float32) + 1.0 + step  # the update count this step would have
    if "avg" in state:  # RMSprop
        rho, eps = opt.rho, opt.epsilon
        v = [rho * v + (1 - rho) * tf.square(g) for v, g in zip(state["v"], grads)]
        if state["avg"] is not None:  # centered
            avg = [rho * a + (1 - rho) * g for a, g in zip(state["avg"], grads)]
            denom = [vi - tf.square(a) + eps for vi, a in zip(v, avg)]
        else:
            avg, denom = None, [vi + eps for vi in v]
        inc = [lr * g / tf.stop_gradient(tf.sqrt(d)) for g, d in zip(grads, denom)]
        if state["m"] is not None:
            m = [opt.momentum * mi + i for mi, i in zip(state["m"], inc)]
            return [p - mi for p, mi in zip(params, m)], {"v": v, "m": m, "avg": avg}
        return [p - i for p, i in zip(params, inc)], {"v": v, "m": None, "avg": avg}
    if "v" in state:  # Adam
        b1, b2, eps = opt.beta_1, opt.beta_2, opt.epsilon
        alpha = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        m = [m + (g - m) * (1 - b1) for m, g in zip(state["m"], grads)]
        v = [v + (tf.square(g) - v) * (1 - b2) for v, g in zip(state["v"], grads)]
        new = [p - alpha * mi / tf.stop_gradient(tf.sqrt(vi) + eps) for p, mi, vi in zip(params, m, v)]
        return new, {"m": m, "v": v}
    # SGD (momentum ramped by gan_cli.training.momentum_sgd.RampedMomentumSGD when it is one)
    if state["m"] is None:
        return [p - lr * g for p, g in zip(params, grads)], state
    if hasattr(opt, "current_momentum"):
        frac = tf.minimum(1.0, (t - 1.0) / float(opt.momentum_steps))
        mu = opt.momentum_start + (opt.momentum_final - opt.momentum_start) * frac
    else:
        mu = opt.momentum
    m = [mu * mi - lr * g for mi, g in zip(state["m"], grads)]
    if opt.nesterov:
        return [p + mu * mi - lr * g for p, mi, g in zip(params, m, grads)], {"m": m}
    return [p + mi for p, mi in zip(params, m)], {"m": m}


def unrolled_weights(d_loss: Callable[[list], tf.Tensor], variables: list, optimizer, steps: int,
                     clip_value: float | None = None) -> list[tf.Tensor]:
    """D's trainable weights after ``steps`` look-ahead updates, differentiable w.r.t. what ``d_loss`` reads.

    ``d_loss(params)``: the discriminator objective evaluated with the trainable weights replaced
    by the tensors ``params`` (same order as ``variables``); ``optimizer``: D's optimizer (read, never
    stepped); ``clip_value``: WGAN clipping applied after each update.
    """
    params = [tf.identity(v.value if hasattr(v, "value") else v) for v in variables]
    state = optimizer_state(optimizer, variables)
    for i in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = d_loss(params)
        grads = tape.gradient(loss, params)
        grads = [tf.zeros_like(p) if g is None else tf.convert_to_tensor(g) for p, g in zip(params, grads)]
        params, state = functional_update(optimizer, params, grads, state, i)
        if clip_value is not None:
            params = [tf.clip_by_value(p, -clip_value, clip_value) for p in params]
    return params
