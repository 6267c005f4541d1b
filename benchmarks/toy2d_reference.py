#!/usr/bin/env python
"""keras-io-style reference for ``benchmarks/toy2d.py``: the 2D GAN of ``gan train experiment=NAME`` written the
way the keras-io GAN examples write one (a ``keras.Model`` subclass whose ``train_step`` makes one discriminator
and one generator update with ``tf.GradientTape``, trained by a default ``model.fit``), so that the benchmark can
put its time to quality beside ours in the same run.

    python benchmarks/toy2d_reference.py --out DIR experiment=grid train.seed=0

The settings come from the same Hydra config as ``gan train`` (``conf/``, the same overrides): the MLPs
(``model.generator/discriminator.hidden``, ReLU, no batch norm), PacGAN packing (``model.pack``), the hinge or
non-saturating loss with ``loss.r1_weight``, Adam, batch size, steps, ``train.g_ema`` and ``train.eval_every``.
Other settings are refused (exit 2).

Every ``eval_every`` steps it scores 2,500 samples of the (EMA) generator with ``gan_cli``'s PacGAN metric and
appends ``{"step", "modes", "high_quality", "reverse_kl", "time"}`` to ``DIR/metrics.jsonl`` as ``gan train``
does (``time``: seconds since this process started). Only the training machinery differs from ``gan train``:
a shuffled ``tf.data`` pipeline, ``tf.random`` noise, one round per compiled call (fit's default
``steps_per_execution=1``) and Keras's own loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T_START = time.time()
ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = {"loss": ("hinge", "nsgan"), "optimizer": ("adam",), "model": ("mlp",)}


def load_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=overrides)


def check(cfg) -> str | None:
    """Why this reference cannot train ``cfg`` (None: it can)."""
    if cfg.loss.name not in SUPPORTED["loss"]:
        return f"loss {cfg.loss.name} (supported: {', '.join(SUPPORTED['loss'])})"
    if cfg.model.name not in SUPPORTED["model"]:
        return f"model {cfg.model.name}"
    for net in ("generator", "discriminator"):
        n = cfg.model[net]
        if n.activation != "relu" or n.get("batch_norm", False):
            return f"model.{net}: ReLU without batch norm only"
        o = cfg.optimizer[net]
        if o.name not in SUPPORTED["optimizer"]:
            return f"optimizer.{net}.name {o.name}"
    d = cfg.model.discriminator
    if d.get("spectral_norm") or d.get("dropout") or d.get("input_dropout") or d.get("mbd_kernels"):
        return "spectral norm, dropout or minibatch discrimination in D"
    if float(cfg.loss.get("feature_matching", 0.0) or 0.0) != 0.0:
        return "loss.feature_matching"
    if cfg.latent.distribution != "gaussian":
        return f"latent.distribution {cfg.latent.distribution}"
    if cfg.train.steps is None or cfg.train.eval_every is None:
        return "train.steps or train.eval_every left null"
    if int(cfg.train.steps) % int(cfg.train.eval_every):
        return "train.steps that is not a multiple of train.eval_every"
    if int(cfg.train.n_critic or 1) != 1 or int(cfg.train.get("n_gen", 1)) != 1:
        return "n_critic / n_gen other than 1"
    if cfg.dataset.name not in ("ring", "grid"):
        return f"dataset {cfg.dataset.name}"
    return None


def adam(o):
    import keras

    return keras.optimizers.Adam(learning_rate=float(o.lr), beta_1=float(o.beta_1), beta_2=float(o.beta_2),
                                 epsilon=float(o.get("epsilon") or 1e-7))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for metrics.jsonl")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for gan train (experiment=grid train.seed=0)")
    args = p.parse_args(argv)
    cfg = load_config(args.overrides)
    why = check(cfg)
    if why is not None:
        print(f"error: toy2d_reference does not support {why}", file=sys.stderr)
        return 2

    import numpy as np
    import keras
    import tensorflow as tf

    from gan_cli.data.toy2d import Toy2D

    seed, t = int(cfg.train.seed), cfg.train
    steps, batch, every = int(t.steps), int(t.batch_size), int(t.eval_every)
    pack, latent_dim = int(cfg.model.get("pack", 1)), int(cfg.latent.dim or 2)
    ema_decay = float(t.get("g_ema", 0.0) or 0.0)
    keras.utils.set_random_seed(seed)
    data = Toy2D(cfg.dataset.name, num_samples=int(cfg.dataset.num_samples), seed=int(cfg.dataset.seed))
    x_train = data.arrays()[0]
    evaluator = data.evaluator(int(cfg.metrics.num_samples), seed)

    def mlp(n_in, hidden, n_out, name):
        inputs = keras.Input((n_in,))
        h = inputs
        for units in hidden:
            h = keras.layers.Dense(int(units), activation="relu")(h)
        return keras.Model(inputs, keras.layers.Dense(n_out)(h), name=name)

    hinge = cfg.loss.name == "hinge"
    r1_weight = float(cfg.loss.get("r1_weight", 0.0) or 0.0)

    class GAN(keras.Model):  # keras-io's "GAN overriding Model.train_step", plus PacGAN packing and an EMA of G
        def __init__(self):
            super().__init__()
            self.generator = mlp(latent_dim, cfg.model.generator.hidden, 2, "generator")
            self.discriminator = mlp(2 * pack, cfg.model.discriminator.hidden, 1, "discriminator")
            self.ema = keras.models.clone_model(self.generator)
            self.ema.set_weights(self.generator.get_weights())
            self.updates = tf.Variable(0.0, trainable=False)

        def compile(self, d_optimizer, g_optimizer):
            super().compile()
            self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

        def train_step(self, real):
            n = tf.shape(real)[0]
            fake = self.generator(tf.random.normal((n, latent_dim)))
            real_packed = tf.reshape(real, (-1, 2 * pack))
            with tf.GradientTape() as tape:
                with tf.GradientTape() as r1_tape:
                    r1_tape.watch(real_packed)
                    real_logits = self.discriminator(real_packed)
                fake_logits = self.discriminator(tf.reshape(fake, (-1, 2 * pack)))
                if hinge:
                    d_loss = (tf.reduce_mean(tf.nn.relu(1.0 - real_logits))
                              + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits)))
                else:
                    d_loss = tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(tf.nn.softplus(fake_logits))
                if r1_weight > 0:  # R1 (Mescheder et al. 2018): gamma/2 E ||grad_x D(x)||^2 on the real packs
                    grad = r1_tape.gradient(real_logits, real_packed)
                    d_loss += 0.5 * r1_weight * tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=1))
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
            with tf.GradientTape() as tape:
                fake_logits = self.discriminator(tf.reshape(self.generator(tf.random.normal((n, latent_dim))),
                                                            (-1, 2 * pack)))
                g_loss = -tf.reduce_mean(fake_logits) if hinge else tf.reduce_mean(tf.nn.softplus(-fake_logits))
            grads = tape.gradient(g_loss, self.generator.trainable_weights)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
            if ema_decay > 0:  # the same warm-up as gan_cli's: d_n = min(d, (1 + n) / (10 + n))
                d = tf.minimum(ema_decay, (1.0 + self.updates) / (10.0 + self.updates))
                for e, w in zip(self.ema.weights, self.generator.weights):
                    e.assign(d * e + (1.0 - d) * w)
            self.updates.assign_add(1.0)
            return {"d_loss": d_loss, "g_loss": g_loss}

    gan = GAN()
    gan.compile(d_optimizer=adam(cfg.optimizer.discriminator), g_optimizer=adam(cfg.optimizer.generator))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    z_eval = np.random.default_rng(seed + 12345).standard_normal((int(cfg.metrics.num_samples), latent_dim))
    z_eval = z_eval.astype(np.float32)

    class Evaluate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            net = gan.ema if ema_decay > 0 else gan.generator
            fake = net.predict(z_eval, batch_size=1024, verbose=0)
            row = {"step": (epoch + 1) * every, **{k: float(v) for k, v in (logs or {}).items()},
                   **evaluator(fake), "time": round(time.time() - T_START, 3)}
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    ds = (tf.data.Dataset.from_tensor_slices(x_train).shuffle(len(x_train), seed=seed).repeat()
          .batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    gan.fit(ds, epochs=steps // every, steps_per_epoch=every, callbacks=[Evaluate()], verbose=0)
    last = json.loads(metrics_path.read_text().splitlines()[-1])
    print(f"done: step {last['step']} in {time.time() - T_START:.1f}s: modes={last['modes']:.0f} "
          f"high_quality={last['high_quality']:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
