"""``GAN(keras.Model)``: one training round per ``train_step``, driven by ``Model.fit``.

A round = ``n_critic`` discriminator updates followed by ``n_gen`` generator updates, all
inside one compiled step. Noise, fake labels and gradient-penalty weights come from a
stateless RNG keyed on ``(seed, round, slot)``, and real batches from a stream keyed on
``(seed, round)``, so a run is a deterministic function of its config and resumes exactly
from the round counter stored in its checkpoint.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gan_cli.errors import ConfigError
from gan_cli.losses import LossPair, gradient_penalty

# First component of the stateless seed per random purpose (second component: the slot counter).
_LATENT, _LABELS, _EPSILON = 0, 1, 2


class GAN(keras.Model):
    """Generator + discriminator trained adversarially.

    ``fit`` data: per round, real batches ``x`` of shape ``(n_critic, B, *sample_shape)``
    (and labels ``y`` of shape ``(n_critic, B)`` int32 for conditional models).

    PacGAN packing (Lin et al. 2018), ``pack=m > 1``: in training the discriminator sees packs
    of m samples concatenated along the feature axis (``pack_samples``: ``(B, *shape)`` ->
    ``(B/m, m * prod(shape))``, packed row i = samples ``i*m .. i*m+m-1``), for real batches, fake
    batches and gradient-penalty interpolates alike (the penalty interpolates packed rows).
    ``critic(x)`` keeps a per-sample meaning for plots and inspection: logits ``(B, 1)`` of
    packs made of m copies of each sample.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, loss: LossPair,
                 loss_params: dict[str, Any], latent_dim: int, latent_distribution: str = "gaussian",
                 n_critic: int = 1, n_gen: int = 1, clip_value: float | None = None, gp_weight: float = 0.0,
                 seed: int = 0, conditional: bool = False, num_classes: int = 0, pack: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.loss_pair, self.loss_params = loss, dict(loss_params)
        self.latent_dim, self.latent_distribution = int(latent_dim), latent_distribution
        self.n_critic, self.n_gen = int(n_critic), int(n_gen)
        self.clip_value = clip_value if loss.clips_weights else None
        self.gp_weight = float(gp_weight) if loss.gradient_penalty else 0.0
        self.seed = int(seed)
        self.conditional, self.num_classes = bool(conditional), int(num_classes)
        self.pack = int(pack)
        if self.pack < 1:
            raise ConfigError(f"model.pack must be >= 1, got {pack}")
        if self.pack > 1 and self.conditional:
            raise ConfigError("model.pack > 1 (PacGAN) does not support model.conditional=true; use model.pack=1")
        self.round = tf.Variable(0, dtype=tf.int64, trainable=False, name="round")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    def compile(self, g_optimizer, d_optimizer, **kwargs):  # noqa: D401 - Keras signature
        """Attach the two optimizers (built eagerly so their slots exist before tracing)."""
        super().compile(**kwargs)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    # ---- randomness ---------------------------------------------------------------
    def _key(self, purpose: int, slot) -> tf.Tensor:
        return tf.stack([tf.constant(self.seed * 8 + purpose, tf.int64), tf.cast(slot, tf.int64)])

    def latent(self, batch, slot) -> tf.Tensor:
        """Noise ``(batch, latent_dim)``: N(0, I) or U[-1, 1], keyed on ``slot``."""
        shape = tf.stack([batch, self.latent_dim])
        if self.latent_distribution == "uniform":
            return tf.random.stateless_uniform(shape, self._key(_LATENT, slot), -1.0, 1.0)
        return tf.random.stateless_normal(shape, self._key(_LATENT, slot))

    def random_labels(self, batch, slot) -> tf.Tensor:
        return tf.random.stateless_uniform(tf.reshape(batch, [1]), self._key(_LABELS, slot), 0,
                                           self.num_classes, dtype=tf.int32)

    # ---- networks -----------------------------------------------------------------
    def generate(self, z, labels=None, training: bool = False):
        return self.generator([z, labels] if self.conditional else z, training=training)

    def pack_samples(self, x) -> tf.Tensor:
        """``(B, *shape)`` -> ``(B/m, m * prod(shape))``: row i = samples ``i*m .. i*m+m-1`` flattened and
        concatenated (``B`` must be a multiple of ``m = self.pack``). Identity when ``pack == 1``."""
        if self.pack == 1:
            return x
        x = tf.convert_to_tensor(x)
        features = int(np.prod(x.shape[1:]))
        return tf.reshape(x, [-1, self.pack * features])

    def critic_packed(self, x, labels=None, training: bool = False):
        """Logits ``(B/m, 1)`` of the packed batch ``x`` ``(B, *shape)`` (the training-time critic)."""
        if self.pack == 1:
            return self.discriminator([x, labels] if self.conditional else x, training=training)
        return self.discriminator(self.pack_samples(x), training=training)

    def critic(self, x, labels=None, training: bool = False):
        """Per-sample logits ``(B, 1)``; with packing, D of a pack of m copies of each sample."""
        if self.pack == 1:
            return self.discriminator([x, labels] if self.conditional else x, training=training)
        x = tf.convert_to_tensor(x)
        flat = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
        return self.discriminator(tf.tile(flat, [1, self.pack]), training=training)

    def call(self, z, training=False):
        return self.generator(z, training=training)

    # ---- one round ----------------------------------------------------------------
    def d_step(self, x, y, slot):
        """One discriminator update on real batch ``x`` ``(B, ...)``; returns its loss."""
        batch = tf.shape(x)[0]
        z = self.latent(batch, slot)
        with tf.GradientTape() as tape:
            fake = self.generate(z, y, training=True)
            real_logits = self.critic_packed(x, y, training=True)
            fake_logits = self.critic_packed(fake, y, training=True)
            d_loss = self.loss_pair.discriminator(real_logits, fake_logits, **self.loss_params)
            if self.gp_weight > 0:
                if self.pack == 1:
                    eps = tf.random.stateless_uniform(tf.reshape(batch, [1]), self._key(_EPSILON, slot))
                    gp = gradient_penalty(lambda t: self.critic(t, y, training=True), x, fake, eps)
                else:  # interpolate packed rows: one weight per pack (PacGAN + WGAN-GP)
                    real_p, fake_p = self.pack_samples(x), self.pack_samples(fake)
                    eps = tf.random.stateless_uniform(tf.reshape(tf.shape(real_p)[0], [1]), self._key(_EPSILON, slot))
                    gp = gradient_penalty(lambda t: self.discriminator(t, training=True), real_p, fake_p, eps)
                d_loss = d_loss + self.gp_weight * gp
        variables = self.discriminator.trainable_variables
        grads = tape.gradient(d_loss, variables)
        self.d_optimizer.apply_gradients(zip(grads, variables))
        if self.clip_value is not None:
            c = self.clip_value
            for v in variables:  # WGAN: clip every critic weight into [-c, c]
                v.assign(tf.clip_by_value(v, -c, c))
        return d_loss

    def g_step(self, batch, slot):
        """One generator update on ``batch`` fresh noise vectors; returns its loss."""
        z = self.latent(batch, slot)
        y = self.random_labels(batch, slot) if self.conditional else None
        with tf.GradientTape() as tape:
            fake = self.generate(z, y, training=True)
            fake_logits = self.critic_packed(fake, y, training=True)
            g_loss = self.loss_pair.generator(fake_logits, **self.loss_params)
        variables = self.generator.trainable_variables
        grads = tape.gradient(g_loss, variables)
        self.g_optimizer.apply_gradients(zip(grads, variables))
        return g_loss

    def train_step(self, data):
        # labelled data arrives as (x, y); an unconditional model ignores the labels
        x_all, y_all = data if isinstance(data, (tuple, list)) else (data, None)
        if not self.conditional:
            y_all = None
        batch = tf.shape(x_all)[1]
        base = self.round * (self.n_critic + self.n_gen)
        d_loss = g_loss = tf.constant(0.0)
        for i in range(self.n_critic):
            d_loss = self.d_step(x_all[i], None if y_all is None else y_all[i], base + i)
        for j in range(self.n_gen):
            g_loss = self.g_step(batch, base + self.n_critic + j)
        self.round.assign_add(1)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    # ---- inference helpers (numpy in, numpy out) ----------------------------------
    def sample(self, n: int, seed: int, labels: np.ndarray | None = None, batch_size: int = 1024):
        """``n`` generated samples (model space) from noise seeded by ``seed``; labels default to uniform."""
        rng = np.random.default_rng(seed)
        if self.latent_distribution == "uniform":
            z = rng.uniform(-1, 1, (n, self.latent_dim)).astype(np.float32)
        else:
            z = rng.standard_normal((n, self.latent_dim)).astype(np.float32)
        if self.conditional and labels is None:
            labels = rng.integers(0, self.num_classes, n).astype(np.int32)
        return self.generate_from(z, labels, batch_size), labels

    def generate_from(self, z: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 1024):
        out = []
        for s in range(0, len(z), batch_size):
            y = None if labels is None else labels[s:s + batch_size]
            out.append(np.asarray(self.generate(z[s:s + batch_size], y, training=False)))
        return np.concatenate(out, axis=0)
