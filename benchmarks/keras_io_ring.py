#!/usr/bin/env python
"""A WGAN on the PacGAN ring written the way the keras-io WGAN-GP example writes one: the reference process
of ``benchmarks/throughput.py --whole-process``.

    python benchmarks/keras_io_ring.py --steps 10000 --out /tmp/ref_run

What a user without gan-cli would write for ``gan train experiment=bench_ring``: the same networks (G 2 -> 128
-> 128 -> 2 and D 2 -> 128 -> 128 -> 1, ReLU, Glorot-uniform kernels), the same data (100,000 points of the
ring: 8 Gaussians at radius 1, std 0.01, drawn with ``numpy.random.default_rng(0)`` exactly as
``gan_cli.data.toy2d.Toy2D`` draws them), the same batch (256 per critic update), n_critic 5, RMSprop lr
5e-5 for both networks, weight clipping at 0.01, Gaussian noise of dimension 2. As in the keras-io example:
a ``keras.Model`` whose ``train_step`` runs the critic updates in a Python ``for`` loop and clips each critic
weight in a Python loop, ``compile`` with Keras's defaults, and ``fit`` on one numpy array with its default
progress output (``verbose="auto"``).

Each ``fit`` step takes ``n_critic * 256`` rows of the array (critic update ``i`` uses rows ``i*256 ..
(i+1)*256 - 1``); the array is cut to whole steps (99,840 of the 100,000 points, 78 steps per epoch) so that
every step has them, and ``fit`` runs ``steps // 78`` epochs: 1,950 steps for ``--steps 2000``, 9,984 for
``--steps 10000`` (never more steps than asked, so the comparison does not favour gan-cli). At the end it
writes 2,500 generated samples (``samples.npy``) and the generator (``generator.keras``) to ``--out``.

Timing lines for the benchmark (stderr, ``PHASE <name> <time.time()>``): ``first_step`` (the end of the
first training step), ``trained`` (the end of ``fit``), ``written`` (samples and generator saved).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def phase(name: str) -> None:
    print(f"PHASE {name} {time.time():.6f}", file=sys.stderr, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="generator steps (rounded down to whole epochs)")
    p.add_argument("--out", type=Path, required=True, help="folder for samples.npy and generator.keras")
    args = p.parse_args()

    import numpy as np
    import keras
    import tensorflow as tf

    batch, n_critic, latent_dim, clip, lr = 256, 5, 2, 0.01, 5e-5

    # the ring: 8 Gaussians at radius 1 (angles 2 pi i / 8), std 0.01, 100,000 points
    rng = np.random.default_rng(0)
    angles = 2 * np.pi * np.arange(8) / 8
    means = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    x = (means[rng.integers(0, 8, size=100_000)] + 0.01 * rng.standard_normal((100_000, 2))).astype("float32")
    per_step = n_critic * batch
    x = x[: len(x) // per_step * per_step]
    epochs = max(1, args.steps // (len(x) // per_step))

    def mlp(inputs: int, outputs: int, name: str) -> keras.Model:
        return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(128, activation="relu"),
                                 keras.layers.Dense(128, activation="relu"), keras.layers.Dense(outputs)], name=name)

    class WGAN(keras.Model):
        def __init__(self, discriminator, generator, latent_dim, discriminator_extra_steps=5, clip_value=0.01):
            super().__init__()
            self.discriminator, self.generator = discriminator, generator
            self.latent_dim, self.d_steps, self.clip_value = latent_dim, discriminator_extra_steps, clip_value

        def compile(self, d_optimizer, g_optimizer):
            super().compile()
            self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

        def train_step(self, real_data):
            batch_size = tf.shape(real_data)[0] // self.d_steps
            for i in range(self.d_steps):
                real = real_data[i * batch_size:(i + 1) * batch_size]
                z = tf.random.normal(shape=(batch_size, self.latent_dim))
                with tf.GradientTape() as tape:
                    fake_logits = self.discriminator(self.generator(z, training=True), training=True)
                    real_logits = self.discriminator(real, training=True)
                    d_loss = tf.reduce_mean(fake_logits) - tf.reduce_mean(real_logits)
                d_gradient = tape.gradient(d_loss, self.discriminator.trainable_variables)
                self.d_optimizer.apply_gradients(zip(d_gradient, self.discriminator.trainable_variables))
                for w in self.discriminator.trainable_variables:
                    w.assign(tf.clip_by_value(w, -self.clip_value, self.clip_value))
            z = tf.random.normal(shape=(batch_size, self.latent_dim))
            with tf.GradientTape() as tape:
                g_loss = -tf.reduce_mean(self.discriminator(self.generator(z, training=True), training=True))
            g_gradient = tape.gradient(g_loss, self.generator.trainable_variables)
            self.g_optimizer.apply_gradients(zip(g_gradient, self.generator.trainable_variables))
            return {"d_loss": d_loss, "g_loss": g_loss}

    class PhaseTimes(keras.callbacks.Callback):
        """Only for the benchmark: the end of the first step."""

        def on_train_batch_end(self, step, logs=None):
            if not getattr(self, "seen", False):
                self.seen = True
                phase("first_step")

    keras.utils.set_random_seed(0)
    generator, discriminator = mlp(latent_dim, 2, "generator"), mlp(2, 1, "discriminator")
    wgan = WGAN(discriminator, generator, latent_dim, n_critic, clip)
    wgan.compile(keras.optimizers.RMSprop(learning_rate=lr), keras.optimizers.RMSprop(learning_rate=lr))
    wgan.fit(x, batch_size=per_step, epochs=epochs, callbacks=[PhaseTimes()])
    phase("trained")

    args.out.mkdir(parents=True, exist_ok=True)
    z = np.random.default_rng(1).standard_normal((2500, latent_dim)).astype("float32")
    np.save(args.out / "samples.npy", generator.predict(z, batch_size=2500, verbose=0))
    generator.save(args.out / "generator.keras")
    phase("written")
    print(f"trained {epochs * (len(x) // per_step)} steps", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
