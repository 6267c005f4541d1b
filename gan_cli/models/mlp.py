"""MLP generator and discriminator for any sample shape (flatten in, reshape out)."""

from __future__ import annotations

import math

import keras
from omegaconf import DictConfig

from gan_cli.core.errors import ConfigError
from gan_cli import fast
from gan_cli.models.layers import Maxout, MinibatchDiscrimination, VirtualBatchNormalization
from gan_cli.models.output import output_transform
from gan_cli.models.reference import DEFAULT_REF_SIZE, drop, prepend

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "elu", "sigmoid", "maxout", "linear")
# G's output unit: any Keras activation, or ``pixel_sigmoid``: a sigmoid on the [0, 1] pixel scale mapped
# affinely to the model's [-1, 1] (2 sigmoid(a) - 1, a stock Rescaling layer), the output of Goodfellow et al. 2014
PIXEL_SIGMOID = "pixel_sigmoid"
MARGINAL_CLIP = 1e-7  # pixel means are clipped to [1e-7, 1 - 1e-7] before the logit (pylearn2's
                      # init_sigmoid_bias_from_marginals, which the authors' mnist.yaml uses)


def _initializer(init_range):
    """``null``: Keras' default (Glorot uniform); a number r: U[-r, r] (the authors' ``irange``)."""
    if init_range is None:
        return "glorot_uniform"
    return keras.initializers.RandomUniform(-float(init_range), float(init_range))


def marginal_bias(data, activation: str):
    """The output bias whose unit reproduces the data's mean value per output (Goodfellow et al. 2014:
    G's sigmoid bias from the pixel marginals): logit(p), p = the mean training pixel on the [0, 1]
    scale clipped to [1e-7, 1 - 1e-7]; for ``tanh`` (= 2 sigmoid(2a) - 1) half of it. Flattened ``(prod(shape),)``."""
    import numpy as np

    x, _ = data.arrays()
    p = np.clip((np.asarray(x, dtype=np.float64).reshape(len(x), -1).mean(axis=0) + 1.0) / 2.0,
                MARGINAL_CLIP, 1.0 - MARGINAL_CLIP)
    logit = np.log(p) - np.log1p(-p)
    return (logit / 2.0 if activation == "tanh" else logit).astype("float32")


def _dense(units: int, spectral_norm: bool = False, **kwargs):
    """``Dense(units)``, wrapped in spectral normalisation (Miyato et al. 2018) when ``spectral_norm``."""
    from gan_cli.models.spectral import spectral

    return spectral(keras.layers.Dense(units, **kwargs), spectral_norm)


def _activation(name: str) -> keras.layers.Layer:
    """The activation layer ``name``; with ``train.fast`` ReLU and LeakyReLU (slope 0.2) differentiate from their
    outputs, which spares gradient penalties' double backpropagation a chain of zero products (gan_cli.fast)."""
    if name == "relu":
        return fast.relu()
    if name == "leaky_relu":
        return fast.leaky_relu(0.2)
    return keras.layers.Activation(name)


def _hidden_block(x, units: int, activation: str, batch_norm, pieces: int, dropout: float = 0.0,
                  n_ref: int = 0, drop_reference: bool = False, spectral_norm: bool = False, init_range=None):
    """Dense (or maxout) layer + optional batch norm + activation + optional dropout.

    ``batch_norm``: false | true (BatchNormalization) | ``"virtual"`` (VirtualBatchNormalization over the
    ``n_ref`` reference rows in front of the batch; ``drop_reference`` removes them right after it, in
    the last hidden block, so the activation and every later layer see the real rows only).
    ``init_range``: kernels drawn from U[-r, r] (null: Glorot uniform)."""
    if activation == "maxout":
        x = Maxout(units, pieces, kernel_initializer=_initializer(init_range))(x)
    else:
        x = _dense(units, spectral_norm, kernel_initializer=_initializer(init_range))(x)
        if batch_norm == "virtual":
            x = VirtualBatchNormalization(n_ref)(x)
            if drop_reference:
                x = drop(x, n_ref, name=None)
        elif batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = _activation(activation)(x)
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
    for key in ("dropout", "input_dropout"):
        if not 0.0 <= float(cfg.get(key, 0.0) or 0.0) < 1.0:
            raise ConfigError(f"model.{net}.{key} must be in [0, 1), got {cfg.get(key)}")
    init_range = cfg.get("init_range")
    if init_range is not None and (isinstance(init_range, bool) or not isinstance(init_range, (int, float))
                                   or not init_range > 0):
        raise ConfigError(f"model.{net}.init_range must be null (Glorot uniform) or a number > 0, got {init_range!r}")


def _vbn_rows(cfg: DictConfig, net: DictConfig) -> int:
    """Reference rows for virtual batch norm in ``net`` (0: none; maxout blocks have no norm layer)."""
    if net.get("batch_norm", False) != "virtual" or net.activation == "maxout" or not len(net.hidden):
        return 0
    return int(cfg.get("vbn_ref_size", DEFAULT_REF_SIZE))


def build_mlp(cfg: DictConfig, data, latent_dim: int, conditional: bool):
    """(G, D) MLPs. G: z ``(B, latent_dim)`` [+ y ``(B,)``] -> ``(B, *sample_shape)``; D -> logits ``(B, 1)``.

    Conditional models concatenate a one-hot label to G's noise and D's flattened input.
    With ``cfg.pack = m > 1`` (PacGAN) D takes packed inputs ``(B/m, m * prod(sample_shape))``
    (see ``GAN.pack_samples``) and returns ``(B/m, 1)``.
    ``batch_norm: virtual`` (G or D) adds virtual batch normalisation: a stored reference batch runs
    in front of every batch (``gan_cli.models.reference``). ``discriminator.mbd_kernels > 0`` adds a
    minibatch discrimination layer (``mbd_kernels`` kernels of ``mbd_dim`` dims) between D's last hidden
    layer and its logits.
    """
    g_cfg, d_cfg = cfg.generator, cfg.discriminator
    _check("generator", g_cfg)
    _check("discriminator", d_cfg)
    output_bias = g_cfg.get("output_bias")
    if output_bias not in (None, "zeros", "marginals"):
        raise ConfigError(f"model.generator.output_bias must be null, zeros or marginals, got {output_bias!r}")
    if output_bias == "marginals" and g_cfg.output_activation not in (PIXEL_SIGMOID, "tanh"):
        raise ConfigError("model.generator.output_bias=marginals needs model.generator.output_activation="
                          f"pixel_sigmoid or tanh, got {g_cfg.output_activation}")
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
    g_ref = _vbn_rows(cfg, g_cfg)
    h = prepend(z, g_ref, "z", "g_reference")
    if conditional:
        y = keras.Input((), dtype="int32", name="label")
        inputs.append(y)
        y_all = prepend(y, g_ref, "y", "g_reference_label")
        h = keras.layers.Concatenate()([h, keras.layers.CategoryEncoding(k, output_mode="one_hot")(y_all)])
    for i, units in enumerate(g_cfg.hidden):
        h = _hidden_block(h, int(units), g_cfg.activation, g_cfg.get("batch_norm", False), int(g_cfg.maxout_pieces),
                          n_ref=g_ref, drop_reference=i == len(g_cfg.hidden) - 1, init_range=g_cfg.get("init_range"))
    pixel_sigmoid = g_cfg.output_activation == PIXEL_SIGMOID
    g_out = keras.layers.Dense(n_out, activation="sigmoid" if pixel_sigmoid else g_cfg.output_activation,
                               kernel_initializer=_initializer(g_cfg.get("init_range")))
    out = g_out(h)
    if output_bias == "marginals":  # the layer is built now; its bias starts at the data's marginals
        g_out.bias.assign(marginal_bias(data, g_cfg.output_activation))
    if pixel_sigmoid:  # [0, 1] -> the model's [-1, 1]
        out = keras.layers.Rescaling(2.0, offset=-1.0)(out)
    out = keras.layers.Reshape(shape)(out)
    transform = output_transform(data)
    if transform is not None:
        out = transform(out)
    generator = keras.Model(inputs if conditional else z, out, name="generator")

    d_ref = _vbn_rows(cfg, d_cfg)
    if pack > 1:  # packed samples, already flattened and concatenated by GAN.pack_samples
        x = keras.Input((pack * n_out,), name="x_packed")
        h = prepend(x, d_ref, "x", "d_reference")
    else:
        x = keras.Input(shape, name="x")
        h = prepend(x, d_ref, "x", "d_reference")
        h = keras.layers.Flatten()(h) if len(shape) > 1 else h
    if float(d_cfg.get("input_dropout", 0.0) or 0.0) > 0:  # on the pixels only (before a label is concatenated)
        h = keras.layers.Dropout(float(d_cfg.input_dropout))(h)
    d_inputs = [x]
    if conditional:
        yd = keras.Input((), dtype="int32", name="label")
        d_inputs.append(yd)
        yd_all = prepend(yd, d_ref, "y", "d_reference_label")
        h = keras.layers.Concatenate()([h, keras.layers.CategoryEncoding(k, output_mode="one_hot")(yd_all)])
    spectral = bool(d_cfg.get("spectral_norm", False))
    for i, units in enumerate(d_cfg.hidden):
        h = _hidden_block(h, int(units), d_cfg.activation, d_cfg.get("batch_norm", False), int(d_cfg.maxout_pieces),
                          float(d_cfg.get("dropout", 0.0)), n_ref=d_ref, drop_reference=i == len(d_cfg.hidden) - 1,
                          spectral_norm=spectral, init_range=d_cfg.get("init_range"))
    if len(d_cfg.hidden):  # the last hidden layer's output, read by feature matching (models/features.py)
        h = keras.layers.Identity(name="features")(h)
    if int(d_cfg.get("mbd_kernels", 0)) > 0:  # after D's last hidden layer (its features), before the logits
        h = MinibatchDiscrimination(int(d_cfg.mbd_kernels), int(d_cfg.get("mbd_dim", 5)),
                                    average=bool(d_cfg.get("mbd_average", True)), name="minibatch_discrimination")(h)
    logits = _dense(1, spectral, name="logits", kernel_initializer=_initializer(d_cfg.get("init_range")))(h)
    discriminator = keras.Model(d_inputs if conditional else x, logits, name="discriminator")
    return generator, discriminator
