"""Loss functions against values computed by hand (logits in, scalar out)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from gan_cli.losses import adversarial as losses
REAL = tf.constant([[2.0], [-1.0]])
FAKE = tf.constant([[0.5], [-3.0]])


def softplus(x):
    return math.log1p(math.exp(x))


# (function, args, expected) with expected written out from the formulas in the docstrings
CASES = [
    # D: -E log s(r) - E log(1 - s(f)) = E softplus(-r) + E softplus(f)
    (losses.gan_discriminator_loss, (REAL, FAKE), {},
     0.5 * (softplus(-2) + softplus(1)) + 0.5 * (softplus(0.5) + softplus(-3))),
    # one-sided smoothing t=0.9: E[t softplus(-r) + (1-t) softplus(r)] + E softplus(f)
    (losses.gan_discriminator_loss, (REAL, FAKE), {"label_smoothing": 0.9},
     0.5 * (0.9 * softplus(-2) + 0.1 * softplus(2) + 0.9 * softplus(1) + 0.1 * softplus(-1))
     + 0.5 * (softplus(0.5) + softplus(-3))),
    (losses.gan_generator_loss, (FAKE,), {}, -0.5 * (softplus(0.5) + softplus(-3))),  # E log(1 - s(f))
    (losses.nsgan_generator_loss, (FAKE,), {}, 0.5 * (softplus(-0.5) + softplus(3))),  # -E log s(f)
    (losses.mlgan_generator_loss, (FAKE,), {}, -0.5 * (math.exp(0.5) + math.exp(-3))),  # -E exp(f)
    (losses.lsgan_discriminator_loss, (REAL, FAKE), {},
     0.5 * 0.5 * ((2 - 1) ** 2 + (-1 - 1) ** 2) + 0.5 * 0.5 * (0.5 ** 2 + 3 ** 2)),
    (losses.lsgan_discriminator_loss, (REAL, FAKE), {"a": -1.0, "b": 1.0},
     0.5 * 0.5 * (1 + 4) + 0.5 * 0.5 * (1.5 ** 2 + 2 ** 2)),
    (losses.lsgan_generator_loss, (FAKE,), {}, 0.5 * 0.5 * ((0.5 - 1) ** 2 + (-3 - 1) ** 2)),
    (losses.lsgan_generator_loss, (FAKE,), {"c": 0.0}, 0.5 * 0.5 * (0.25 + 9)),
    (losses.wgan_discriminator_loss, (REAL, FAKE), {}, (0.5 - 3) / 2 - (2 - 1) / 2),
    (losses.wgan_generator_loss, (FAKE,), {}, -(0.5 - 3) / 2),
    # hinge: E max(0, 1 - r) + E max(0, 1 + f) = (0 + 2)/2 + (1.5 + 0)/2
    (losses.hinge_discriminator_loss, (REAL, FAKE), {}, 1.0 + 0.75),
    (losses.hinge_generator_loss, (FAKE,), {}, 1.25),
]


@pytest.mark.parametrize("fn,args,kwargs,expected", CASES)
def test_loss_values(fn, args, kwargs, expected):
    assert float(fn(*args, **kwargs)) == pytest.approx(expected, rel=1e-5)


def test_bce_is_stable_for_large_logits():
    big = tf.constant([[80.0]])
    assert math.isfinite(float(losses.gan_discriminator_loss(big, -big)))
    assert float(losses.nsgan_generator_loss(-big)) == pytest.approx(80.0, rel=1e-5)


def test_gradient_penalty_linear_critic_closed_form():
    # critic D(x) = w . x has gradient w everywhere: penalty (||w|| - 1)^2 whatever the interpolation
    w = tf.constant([[3.0], [4.0]])
    critic = lambda x: tf.matmul(x, w)  # noqa: E731
    real = tf.random.normal([8, 2], seed=1)
    fake = tf.random.normal([8, 2], seed=2)
    eps = tf.random.uniform([8], seed=3)
    assert float(losses.gradient_penalty(critic, real, fake, eps)) == pytest.approx((5.0 - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_zero_gradient_is_finite():
    critic = lambda x: tf.zeros([tf.shape(x)[0], 1]) * tf.reduce_sum(x, axis=1, keepdims=True)  # noqa: E731
    real = tf.ones([4, 2])
    with tf.GradientTape() as tape:
        tape.watch(real)
        gp = losses.gradient_penalty(critic, real, real * 0.5, tf.fill([4], 0.3))
    assert float(gp) == pytest.approx(1.0, abs=1e-5)  # (sqrt(0 + 1e-12) - 1)^2
    grad = tape.gradient(gp, real)
    assert grad is None or np.all(np.isfinite(grad.numpy()))


def test_r1_penalty_quadratic_critic():
    # D(x) = sum x^2 -> grad 2x, ||grad||^2 = 4 ||x||^2
    x = tf.constant([[1.0, 2.0], [0.0, 1.0]])
    value = losses.r1_penalty(lambda t: tf.reduce_sum(t * t, axis=1, keepdims=True), x)
    assert float(value) == pytest.approx((4 * 5 + 4 * 1) / 2)


def test_get_loss_lists_valid_names():
    from gan_cli.core.errors import ConfigError

    with pytest.raises(ConfigError, match="valid: gan, gngan, hinge, lsgan"):
        losses.get_loss("nope")


def test_ramped_momentum_sgd_matches_numpy():
    """Momentum rises 0.5 -> 0.7 over 2 updates; compare 3 updates against the recurrence by hand."""
    from gan_cli.training.optimizers import build_optimizer

    opt = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.5, "momentum_final": 0.7, "momentum_steps": 2})
    w = tf.Variable([1.0])
    opt.build([w])
    m, x = 0.0, 1.0
    for t in range(3):
        g = 2 * x  # gradient of x^2
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(w * w)
        opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))
        mu = 0.5 + 0.2 * min(1.0, t / 2)
        m = mu * m - 0.1 * g
        x = x + m
        assert float(w.numpy()[0]) == pytest.approx(x, rel=1e-6)


def test_every_loss_family_has_its_functions_and_properties():
    """gan_cli.losses.FAMILIES (what configs may name) and the registry of functions list the same families."""
    from gan_cli.losses import FAMILIES

    assert set(losses.LOSSES) == set(FAMILIES)
    assert losses.get_loss("wgan").clips_weights and not losses.get_loss("wgan_gp").clips_weights
    assert losses.get_loss("wgan_gp").gradient_penalty and not losses.get_loss("hinge").gradient_penalty
