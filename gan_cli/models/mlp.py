"""MLP generator and discriminator for any sample shape (flatten in, reshape out)."""

from __future__ import annotations

import math

import keras
from omegaconf import DictConfig

from gan_cli.errors import ConfigError
from gan_cli.models.layers import Maxout

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "elu", "sigmoid", "maxout", "linear")


def _hidden_block(x, units: int, activation: str, batch_norm: bool, pieces: int, dropout: float = 0.0):
    """Dense (or maxout) layer + optional batch norm + activation + optional dropout."""
    if activation == "maxout":
        x = Maxout(units, pieces)(x)
    else:
        x = keras.layers.Dense(units)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.LeakyReLU(0.2)(x) if activation == "leaky_relu" else keras.layers.Activation(activation)(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    return x


def _check(net: str, cfg: DictConfig) -> None:
    if cfg.activation not in ACTIVATIONS:
        raise ConfigError(f"model.{net}.activation '{cfg.activation}' unknown; valid: {', '.join(ACTIVATIONS)}")
    if any(int(h) < 1 for h in cfg.hidden):
        raise ConfigError(f"model.{net}.hidden sizes must be >= 1, got {list(cfg.hidden)}")
    if int(cfg.get("maxout_pieces", 5)) < 1:
        raise ConfigError(f"model.{net}.maxout_pieces must be >= 1")
    if not 0.0 <= float(cfg.get("dropout", 0.0)) < 1.0:
        raise ConfigError(f"model.{net}.dropout must be in [0, 1), got {cfg.get('dropout')}")


def build_mlp(cfg: DictConfig, data, latent_dim: int, conditional: bool):
    """(G, D) MLPs. G: z ``(B, latent_dim)`` [+ y ``(B,)``] -> ``(B, *sample_shape)``; D -> logits ``(B, 1)``.

    Conditional models concatenate a one-hot label to G's noise and D's flattened input.
    With ``cfg.pack = m > 1`` (PacGAN) D takes packed inputs ``(B/m, m * prod(sample_shape))``
    (see ``GAN.pack_samples``) and returns ``(B/m, 1)``.
    """
    g_cfg, d_cfg = cfg.generator, cfg.discriminator
    _check("generator", g_cfg)
    _check("discriminator", d_cfg)
    shape = tuple(data.sample_shape)
    n_out = math.prod(shape)
    k = data.num_classes
    pack = int(cfg.get("pack", 1))
    if pack < 1:
        raise ConfigError(f"model.pack must be >= 1, got {pack}")
    if pack > 1 and conditional:
        raise ConfigError("model.pack > 1 (PacGAN) does not support model.conditional=true; use model.pack=1")

    z = keras.Input((latent_dim,), name="z")
    inputs = [z]
    h = z
    if conditional:
        y = keras.Input((), dtype="int32", name="label")
        inputs.append(y)
        h = keras.layers.Concatenate()([z, keras.layers.CategoryEncoding(k, output_mode="one_hot")(y)])
    for units in g_cfg.hidden:
        h = _hidden_block(h, int(units), g_cfg.activation, bool(g_cfg.batch_norm), int(g_cfg.maxout_pieces))
    out = keras.layers.Dense(n_out, activation=g_cfg.output_activation)(h)
    out = keras.layers.Reshape(shape)(out)
    transform = data.output_transform()
    if transform is not None:
        out = transform(out)
    generator = keras.Model(inputs if conditional else z, out, name="generator")

    if pack > 1:  # packed samples, already flattened and concatenated by GAN.pack_samples
        x = keras.Input((pack * n_out,), name="x_packed")
        h = x
    else:
        x = keras.Input(shape, name="x")
        h = keras.layers.Flatten()(x) if len(shape) > 1 else x
    d_inputs = [x]
    if conditional:
        yd = keras.Input((), dtype="int32", name="label")
        d_inputs.append(yd)
        h = keras.layers.Concatenate()([h, keras.layers.CategoryEncoding(k, output_mode="one_hot")(yd)])
    for units in d_cfg.hidden:
        h = _hidden_block(h, int(units), d_cfg.activation, bool(d_cfg.batch_norm), int(d_cfg.maxout_pieces),
                          float(d_cfg.get("dropout", 0.0)))
    logits = keras.layers.Dense(1, name="logits")(h)
    discriminator = keras.Model(d_inputs if conditional else x, logits, name="discriminator")
    return generator, discriminator
