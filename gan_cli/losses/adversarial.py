"""GAN losses as pure functions of discriminator logits.

Naming rule: ``<family>_generator_loss(fake_logits, **p)`` and
``<family>_discriminator_loss(real_logits, fake_logits, **p)``. Logits are the raw,
linear outputs of the discriminator, shape ``(B, 1)`` or ``(B,)``; every loss returns a
scalar (mean over the batch). ``D(x) = sigmoid(logit)`` where a family needs a
probability. Penalties (gradient penalty, R1) are separate functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from gan_cli.core.errors import ConfigError
from gan_cli.losses import FAMILIES


def _bce_real(logits: tf.Tensor, target: float) -> tf.Tensor:
    """Mean of -[t log sigmoid(l) + (1 - t) log(1 - sigmoid(l))], computed stably."""
    # log sigmoid(l) = -softplus(-l); log(1 - sigmoid(l)) = -softplus(l)
    return tf.reduce_mean(target * tf.nn.softplus(-logits) + (1.0 - target) * tf.nn.softplus(logits))


# --- minimax / non-saturating / maximum-likelihood (share the BCE discriminator) ---

def gan_discriminator_loss(real_logits, fake_logits, label_smoothing: float = 1.0, **_):
    """-E log D(x) - E log(1 - D(G(z))); real target ``label_smoothing`` (0.9 = one-sided smoothing)."""
    return _bce_real(real_logits, label_smoothing) + tf.reduce_mean(tf.nn.softplus(fake_logits))


def gan_generator_loss(fake_logits, **_):
    """Minimax (saturating) form: E log(1 - D(G(z))) = -E softplus(l)."""
    return -tf.reduce_mean(tf.nn.softplus(fake_logits))


nsgan_discriminator_loss = gan_discriminator_loss


def nsgan_generator_loss(fake_logits, **_):
    """Non-saturating form: -E log D(G(z)) = E softplus(-l)."""
    return tf.reduce_mean(tf.nn.softplus(-fake_logits))


mlgan_discriminator_loss = gan_discriminator_loss


def mlgan_generator_loss(fake_logits, **_):
    """Maximum-likelihood form (Goodfellow 2016 tutorial): -E exp(sigmoid^-1(D(G(z)))) = -E exp(l).

    Logits are capped at 20 before ``exp`` so one runaway sample cannot overflow float32.
    """
    return -tf.reduce_mean(tf.exp(tf.minimum(fake_logits, 20.0)))


# --- least squares ---

def lsgan_discriminator_loss(real_logits, fake_logits, a: float = 0.0, b: float = 1.0,
                             label_smoothing: float = 1.0, **_):
    """1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2, with the real target b scaled by ``label_smoothing``."""
    b = b * label_smoothing
    return 0.5 * tf.reduce_mean(tf.square(real_logits - b)) + 0.5 * tf.reduce_mean(tf.square(fake_logits - a))


def lsgan_generator_loss(fake_logits, c: float = 1.0, **_):
    """1/2 E (D(G(z)) - c)^2."""
    return 0.5 * tf.reduce_mean(tf.square(fake_logits - c))


# --- Wasserstein (critic) and hinge ---

def wgan_discriminator_loss(real_logits, fake_logits, **_):
    """Critic loss E D(G(z)) - E D(x) (its negative estimates the Wasserstein-1 distance)."""
    return tf.reduce_mean(fake_logits) - tf.reduce_mean(real_logits)


def wgan_generator_loss(fake_logits, **_):
    """-E D(G(z))."""
    return -tf.reduce_mean(fake_logits)


wgan_gp_discriminator_loss = wgan_discriminator_loss
wgan_gp_generator_loss = wgan_generator_loss


def hinge_discriminator_loss(real_logits, fake_logits, **_):
    """E max(0, 1 - D(x)) + E max(0, 1 + D(G(z)))."""
    return tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))


hinge_generator_loss = wgan_generator_loss


# --- penalties ---

def _per_sample_norm(grads: tf.Tensor) -> tf.Tensor:
    """L2 norm over all but the batch axis; the epsilon keeps the gradient of sqrt finite at 0."""
    flat = tf.reshape(grads, [tf.shape(grads)[0], -1])
    return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1) + 1e-12)


def gradient_penalty(critic: Callable[[tf.Tensor], tf.Tensor], real: tf.Tensor, fake: tf.Tensor,
                     epsilon: tf.Tensor) -> tf.Tensor:
    """WGAN-GP penalty E (||grad_x D(x_hat)||_2 - 1)^2 with x_hat = e x + (1 - e) G(z).

    Args:
        critic: maps a batch ``(B, *shape)`` to logits ``(B, 1)``.
        real, fake: batches of the same shape ``(B, *shape)``.
        epsilon: interpolation weights ``(B,)`` drawn from U[0, 1].
    """
    e = tf.reshape(epsilon, [-1] + [1] * (len(real.shape) - 1))
    x_hat = e * real + (1.0 - e) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        out = critic(x_hat)
    grads = tape.gradient(out, x_hat)
    return tf.reduce_mean(tf.square(_per_sample_norm(grads) - 1.0))


def r1_penalty(critic: Callable[[tf.Tensor], tf.Tensor], real: tf.Tensor) -> tf.Tensor:
    """R1 penalty (Mescheder et al. 2018): E ||grad_x D(x)||^2 on real data (weight gamma/2 applied by the caller)."""
    real = tf.convert_to_tensor(real)
    with tf.GradientTape() as tape:
        tape.watch(real)
        out = critic(real)
    grads = tape.gradient(out, real)
    flat = tf.reshape(grads, [tf.shape(grads)[0], -1])
    return tf.reduce_mean(tf.reduce_sum(tf.square(flat), axis=1))


def feature_matching_loss(real_features: tf.Tensor, fake_features: tf.Tensor) -> tf.Tensor:
    """Feature matching (Salimans et al. 2016): ||E f(x) - E f(G(z))||_2^2 over a real and a fake batch.

    ``real_features`` ``(B_r, F...)`` and ``fake_features`` ``(B_f, F...)``: D's intermediate features
    (axes after the first are flattened); returns the squared L2 distance of the batch means (float32).
    """
    def mean(f):
        f = tf.cast(f, tf.float32)
        return tf.reduce_mean(tf.reshape(f, [tf.shape(f)[0], -1]), axis=0)

    return tf.reduce_sum(tf.square(mean(real_features) - mean(fake_features)))


# --- registry ---

@dataclass(frozen=True)
class LossPair:
    """A loss family: its generator and discriminator losses and what the training step must add."""

    name: str
    generator: Callable[..., tf.Tensor]
    discriminator: Callable[..., tf.Tensor]
    clips_weights: bool = False      # WGAN: clip critic weights after each critic update
    gradient_penalty: bool = False   # WGAN-GP


def _pair(name: str, generator: Callable[..., tf.Tensor], discriminator: Callable[..., tf.Tensor]) -> LossPair:
    """The LossPair of family ``name`` with the properties ``FAMILIES`` gives it."""
    props = FAMILIES[name]
    return LossPair(name, generator, discriminator, clips_weights=props.get("clips_weights", False),
                    gradient_penalty=props.get("gradient_penalty", False))


LOSSES: dict[str, LossPair] = {
    "gan": _pair("gan", gan_generator_loss, gan_discriminator_loss),
    "nsgan": _pair("nsgan", nsgan_generator_loss, nsgan_discriminator_loss),
    "mlgan": _pair("mlgan", mlgan_generator_loss, mlgan_discriminator_loss),
    "lsgan": _pair("lsgan", lsgan_generator_loss, lsgan_discriminator_loss),
    "wgan": _pair("wgan", wgan_generator_loss, wgan_discriminator_loss),
    "wgan_gp": _pair("wgan_gp", wgan_gp_generator_loss, wgan_gp_discriminator_loss),
    "hinge": _pair("hinge", hinge_generator_loss, hinge_discriminator_loss),
}


def _register_gngan() -> None:
    """GN-GAN (Tran, Bui & Cheung 2018): its training step (``gan_cli.training.gngan.GNGAN``, chosen by ``build_gan``) calls the full
    objectives in ``gan_cli.losses.gngan``; these registry entries are their logit-only parts."""
    from gan_cli.losses.gngan import gngan_discriminator_loss, gngan_generator_loss

    LOSSES["gngan"] = _pair("gngan", gngan_generator_loss, gngan_discriminator_loss)


_register_gngan()


def get_loss(name: str) -> LossPair:
    """The loss family ``name``; raises ConfigError listing the valid names."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
