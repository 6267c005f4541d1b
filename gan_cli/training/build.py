"""Building the compiled GAN of a resolved config: networks, loss, optimizers and the compiled step's settings."""

from __future__ import annotations

import math
import os

from omegaconf import DictConfig

from gan_cli import fast as fast_mod


def build_gan(cfg: DictConfig, data):
    """A compiled ``GAN`` for the resolved config ``cfg`` and dataset ``data``."""
    import keras

    from gan_cli.training import precision
    from gan_cli.training.gan import GAN
    from gan_cli.losses.adversarial import get_loss
    from gan_cli.models import get_builder
    from gan_cli.training.optimizers import build_optimizer

    keras.utils.set_random_seed(int(cfg.train.seed))
    conditional = bool(cfg.model.get("conditional", False))
    mixed = precision.compute_dtype(cfg.train.get("mixed_precision", False))
    fast = bool(cfg.train.get("fast", True))  # the speed tricks of gan_cli.fast, or their plain equivalents
    with precision.policy(mixed), fast_mod.switch(fast):  # half compute, float32 logits/samples/losses (precision.py)
        generator, discriminator = get_builder(cfg.model.name)(cfg.model, data, int(cfg.latent.dim), conditional)
    if mixed:
        precision.float32_ends(generator, discriminator)
    from gan_cli.models.reference import fill_reference_batches

    # virtual batch norm's fixed reference batches (a no-op without it); checkpoints store them
    fill_reference_batches(generator, discriminator, data, cfg.latent.distribution, int(cfg.train.seed),
                           int(cfg.model.get("pack", 1)))
    loss = get_loss(cfg.loss.name)
    from gan_cli.config.techniques import LOSS_KEYS
    from gan_cli.training import techniques

    params = {k: v for k, v in cfg.loss.items()
              if k not in ("name", "clip_value", "gp_weight", "default_optimizer", "default_n_critic",
                           *LOSS_KEYS)}
    gan_cls, extra = GAN, {}
    if cfg.loss.name == "gngan":  # GN-GAN (Tran, Bui & Cheung 2018): adds an encoder and its optimizer
        from gan_cli.training.gngan import gngan_parts

        gan_cls, extra = gngan_parts(cfg, data)
    gan = gan_cls(generator, discriminator, loss, params, latent_dim=int(cfg.latent.dim),
              latent_distribution=cfg.latent.distribution,
              n_gen=int(cfg.train.n_gen), clip_value=cfg.loss.get("clip_value"),
              gp_weight=cfg.loss.get("gp_weight", 0.0), seed=int(cfg.train.seed),
              conditional=conditional, num_classes=data.num_classes, pack=int(cfg.model.get("pack", 1)),
              fast=fast, **techniques.gan_kwargs(cfg), **extra)  # n_critic, slot_stride and the stabilisation options
    optimizers = [build_optimizer(cfg.optimizer.generator, fused=fast),
                  build_optimizer(cfg.optimizer.discriminator, fused=fast)]
    optimizers = [precision.loss_scaled(o, mixed) for o in optimizers]
    gan.compile(*optimizers, steps_per_execution=steps_per_execution(cfg), jit_compile=jit_compile_for(cfg))
    return gan


def resolve_jit_compile(setting: bool | str, gpu: bool, distributed: bool, deterministic: bool) -> bool:
    """``train.jit_compile``: ``true`` / ``false`` as given; ``auto`` = XLA on a GPU (as Keras's own
    ``jit_compile="auto"``), except under a distribution strategy (Keras's auto leaves XLA off there too)
    or ``train.deterministic`` (Keras compiles no XLA step under op determinism). On a GPU
    the training step is many small ops: XLA fuses them (docs/performance.md: 7.7x the steps/s on the
    2D case on an H100); on a CPU it measured slower, so auto leaves it off there."""
    if setting == "auto":
        return gpu and not distributed and not deterministic
    return bool(setting)


def jit_compile_for(cfg: DictConfig) -> bool:
    """Whether ``gan train`` XLA-compiles the training step for ``cfg`` on this machine."""
    import tensorflow as tf

    return resolve_jit_compile(cfg.train.jit_compile, gpu=bool(tf.config.list_physical_devices("GPU")),
                               distributed=cfg.train.get("strategy", "none") != "none",
                               deterministic=bool(cfg.train.get("deterministic", False)))


def block_rounds(cfg: DictConfig) -> int:
    """Rounds per Keras epoch: every evaluation and checkpoint falls on an epoch boundary."""
    t = cfg.train
    return math.gcd(math.gcd(int(t.eval_every), int(t.checkpoint_every)), int(t.steps))


def steps_per_execution(cfg: DictConfig) -> int:
    if cfg.train.get("strategy", "none") != "none":
        return 1  # Keras 3 fails on steps_per_execution > 1 under tf.distribute (keras-team/keras#19246)
    return math.gcd(int(cfg.train.steps_per_execution), block_rounds(cfg))  # filled by config.resolve when null


def device_line() -> str:
    """``GPU 0: NVIDIA H100 80GB HBM3`` (every visible GPU by name) or ``CPU (N cores)``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    names = []
    for i, gpu in enumerate(gpus):
        try:
            name = tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name
        except (ValueError, RuntimeError):
            name = gpu.name
        names.append(f"GPU {i}: {name}")
    return ", ".join(names)
