"""GN-GAN (Tran, Bui & Cheung 2018): ``loss=gngan`` trains an encoder E with G as its decoder.

One training round follows Algorithm 1 of Tran, Bui & Cheung (2018):

1. auto-encoder: E, G <- min V_AE(E, G) = ||x - G(E(x))||^2 + lambda_r V_R on the round's first real
   batch x and a batch of noise z (``ae_step``; its own optimizer over E's and G's weights);
2. discriminator: D <- max V_D (``GAN.d_step`` with ``discriminator_loss`` below, ``train.n_critic``
   times, as for every loss);
3. generator: G <- min V_G, the gradient-matching objective (``GAN.g_step`` with ``generator_loss``
   below, ``train.n_gen`` times) against the round's last real batch, which with Algorithm 1's one D
   step (``n_critic`` 1, the default) is the auto-encoder's x.

The auto-encoder's noise comes from its own stateless stream (keyed on the round), as the authors' code
draws fresh noise for each phase. Options that act through ``_run_d`` compose: unrolled D look-ahead,
R1 (added to -V_D), feature matching (added to V_G), generator EMA, spectral norm, minibatch
discrimination and virtual batch norm in D or G.

The math lives in ``gan_cli.losses.gngan``. Sampling and evaluation use G only, unchanged.

The encoder mirrors D's architecture (the model builder's discriminator without minibatch
discrimination, virtual batch norm or packing), with a linear ``latent_dim``-sized output in place of
D's logit. Its optimizer copies ``optimizer.generator``'s settings (a separate instance, so the
auto-encoder's moment estimates for G's weights are not mixed with the adversarial ones). The encoder's
weights and its optimizer are checkpointed as the ``e`` and ``e_opt`` groups (``extra_state_groups``).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf, open_dict

from gan_cli.core import streams
from gan_cli.training.distribute import replica_share
from gan_cli.core.errors import ConfigError
from gan_cli.training.gan import GAN
from gan_cli.losses.adversarial import feature_matching_loss, r1_penalty
from gan_cli.losses.gngan import (autoencoder_loss, discriminator_loss, gradient_matching, interpolate_penalty,
                                  probability_and_gradient)

DEFAULTS = {"alpha": 0.05, "lambda_r": 1.0, "lambda_p": 1.0, "lambda_m1": 1.0, "lambda_m2": 1.0,
            "sigma_z": 1.0, "sigma_x": 1.0}


class GNGAN(GAN):
    """``GAN`` plus an encoder ``E`` ``(B, *sample_shape) -> (B, latent_dim)`` and GN-GAN's objectives."""

    def __init__(self, *args, encoder: keras.Model, e_optimizer, **kwargs):
        super().__init__(*args, **kwargs)  # unconditional and unpacked (gan_cli.config.techniques)
        self.encoder, self.e_optimizer = encoder, e_optimizer
        self.hp = {k: float(self.loss_params.get(k, v)) for k, v in DEFAULTS.items()}
        self.ae_loss_tracker = keras.metrics.Mean(name="ae_loss")

    def compile(self, g_optimizer, d_optimizer, **kwargs):  # noqa: D401 - Keras signature
        super().compile(g_optimizer, d_optimizer, **kwargs)
        self.e_optimizer.build(self.ae_variables())

    @property
    def metrics(self):
        return [*super().metrics, self.ae_loss_tracker]

    def ae_variables(self) -> list:
        """What the auto-encoder step updates: E's and G's trainable weights."""
        return [*self.encoder.trainable_variables, *self.generator.trainable_variables]

    def extra_state_groups(self, optimizers: bool = True) -> list[tuple[str, list]]:
        """Checkpoint groups besides g/d (see ``checkpoint.state_groups``): encoder weights and optimizer."""
        groups = [("e", list(self.encoder.weights))]
        if optimizers:
            groups.append(("e_opt", list(self.e_optimizer.variables)))
        return groups

    # ---- the three phases ------------------------------------------------------------
    def ae_latent(self, batch, slot) -> tf.Tensor:
        """The auto-encoder step's noise ``(batch, latent_dim)`` (its own stream, keyed on the round)."""
        return self.latent(batch, slot, purpose=streams.AE_NOISE)

    def ae_step(self, x, slot):
        """Phase 1: E, G <- min ||x - G(E(x))||^2 + lambda_r V_R(z, G(z)) on real ``x`` ``(B, *shape)``;
        returns V_AE."""
        hp = self.hp
        z = self.ae_latent(tf.shape(x)[0], slot)
        variables = self.ae_variables()
        with tf.GradientTape() as tape:
            x_rec = self.generator(self.encoder(x, training=True), training=True)
            gz = self.generator(z, training=True)
            loss = autoencoder_loss(x, tf.cast(x_rec, tf.float32), z, tf.cast(gz, tf.float32), hp["lambda_r"],
                                    hp["sigma_z"], hp["sigma_x"])
            scaled = self.e_optimizer.scale_loss(loss)  # identity without mixed precision
        grads = replica_share(tape.gradient(scaled, variables))
        self.e_optimizer.apply_gradients(zip(grads, variables))
        return loss

    def discriminator_loss(self, x, y, fake, slot, weights=None):
        """Phase 2 objective (minimised by ``GAN.d_step``): -V_D = -[(1 - alpha) E log D(x) + alpha V_C
        + E log(1 - D(G(z)))] + lambda_p V_P, V_C on the reconstructions G(E(x)) (E and G held fixed);
        plus ``r1_weight``/2 * R1 when that option is on. ``weights``: see ``GAN._run_d`` (unrolling)."""
        hp = self.hp

        def d(t):
            return self._run_d(t, weights)

        recon = tf.stop_gradient(self.generator(self.encoder(x, training=True), training=True))
        penalty = interpolate_penalty(d, x, fake, self._epsilon(tf.shape(x)[0], slot))
        loss = discriminator_loss(d(x), d(recon), d(fake), penalty, hp["alpha"], hp["lambda_p"])
        if self.r1_weight > 0:
            loss = loss + 0.5 * self.r1_weight * r1_penalty(d, x)
        return loss

    def generator_loss(self, fake, y, x_real=None, y_real=None, weights=None):
        """Phase 3 objective (minimised by ``GAN.g_step``): V_G, gradient matching of D's probabilities and
        input gradients on ``fake`` = G(z) against the round's real batch ``x_real``; with feature matching
        on, its term is added (``feature_matching_only``: it replaces V_G)."""
        hp = self.hp

        def d(t):
            return self._run_d(t, weights)

        d_real, grad_real = probability_and_gradient(d, x_real)  # constants for G's update
        d_real, grad_real = tf.stop_gradient(d_real), tf.stop_gradient(grad_real)
        d_fake, grad_fake = probability_and_gradient(d, fake)  # second order: grad_fake depends on G
        g_loss = gradient_matching(d_real, d_fake, grad_real, grad_fake, x_real, tf.cast(fake, tf.float32),
                                   hp["lambda_m1"], hp["lambda_m2"])
        if self.d_features is not None:
            fake_features, _ = self._run_d(fake, weights, features=True)
            real_features, _ = self._run_d(x_real, weights, features=True)
            fm = self.feature_matching * feature_matching_loss(real_features, fake_features)
            g_loss = fm if self.feature_matching_only else g_loss + fm
        return g_loss

    def g_step(self, batch, slot, x_real=None, y_real=None):
        """``GAN.g_step`` with the round's last real batch always given (V_G compares against it; the base
        round passes it only for feature matching and unrolling)."""
        if x_real is None:
            x_real = self._round_real
        return super().g_step(batch, slot, x_real, y_real)

    def train_step(self, data):
        """Algorithm 1: the auto-encoder step, then the base round (n_critic D steps, then n_gen G steps)."""
        x_all = data[0] if isinstance(data, (tuple, list)) else data  # (B, n_critic, *shape)
        # the round's first real batch (B, *shape); with n_critic = 1 (Algorithm 1) D and G see it too
        ae_loss = self.ae_step(x_all[:, 0], self.round)
        # G's real batch, read by g_step while this same step is traced (a tensor of this trace, not state)
        object.__setattr__(self, "_round_real", x_all[:, self.n_critic - 1])
        logs = super().train_step(data)
        self.ae_loss_tracker.update_state(ae_loss)
        return {**logs, "ae_loss": self.ae_loss_tracker.result()}


def build_encoder(cfg: DictConfig, data: Any, latent_dim: int) -> keras.Model:
    """E ``(B, *sample_shape) -> (B, latent_dim)``: D's architecture (``cfg`` = the model node) with a
    linear ``latent_dim`` output instead of the logit; no minibatch discrimination, VBN or packing."""
    from gan_cli.models import get_builder

    node = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(node):
        node.pack = 1
        node.conditional = False
        disc = node.get("discriminator")
        if disc is not None:
            disc.mbd_kernels = 0
            if disc.get("batch_norm") == "virtual":
                disc.batch_norm = False
            if disc.get("norm") == "virtual":
                disc.norm = "none"
    _, mirror = get_builder(node.name)(node, data, int(latent_dim), False)
    features = mirror.layers[-1].input  # what D's logits layer reads
    if isinstance(features, (list, tuple)):
        raise ConfigError(f"loss=gngan cannot mirror model '{node.name}' as an encoder; use model=mlp or dcgan")
    code = keras.layers.Dense(int(latent_dim), dtype="float32", name="e_latent")(features)
    return keras.Model(mirror.inputs, code, name="encoder")


def gngan_parts(cfg: DictConfig, data: Any) -> tuple[type, dict]:
    """``(GNGAN, extra constructor kwargs)`` for ``build_gan``: the encoder and its optimizer."""
    from gan_cli import fast
    from gan_cli.training import precision
    from gan_cli.training.optimizers import build_optimizer

    mixed = precision.compute_dtype(cfg.train.get("mixed_precision", False))
    on = bool(cfg.train.get("fast", True))
    with precision.policy(mixed), fast.switch(on):
        encoder = build_encoder(cfg.model, data, int(cfg.latent.dim))
    # the generator's settings (a separate instance)
    optimizer = precision.loss_scaled(build_optimizer(cfg.optimizer.generator, fused=on), mixed)
    return GNGAN, {"encoder": encoder, "e_optimizer": optimizer}
