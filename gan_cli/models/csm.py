"""The CSM GAN of Fragnière (2022) on eigenvectors: MLP generator, small conv critic, output transform.

Generator: ``z (B, latent_dim)`` -> [Dense h -> norm -> activation] for h in ``hidden`` ->
Dense ``prod(sample_shape)`` -> Reshape ``sample_shape`` -> ``csm_output_transform(data)``.
Critic: ``x (B, M, M, C)`` -> [Conv2D f, stride s -> LeakyReLU] for f in ``filters`` ->
GlobalMaxPool -> Dense 1 (linear logits ``(B, 1)``). With ``train.fast`` (default) and a last feature
map of at least ``SPARSE_MIN_POSITIONS`` positions (64 mics: 256; 16 mics: 16, too few to pay) the last two
convs (or the only one), their LeakyReLUs and the pool are one ``ConvLeakyMaxPool`` layer: the same function
and weights with a backward pass that works from the pooled positions (about half of a WGAN round's FLOPs).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from gan_cli.core.errors import ConfigError
from gan_cli import fast as fast_mod
from gan_cli.fast.conv_max_pool import SPARSE_MIN_POSITIONS, ConvLeakyMaxPool, pooled_positions

LABEL_EMBEDDING = 32   # width of G's learned label (frequency line) embedding


@keras.saving.register_keras_serializable(package="gan_cli")
class CsmOutputTransform(keras.layers.Layer):
    """Maps the generator's raw output to a valid sample of the CSM representation.

    Input/output ``(B, M, M, C)`` float32, channels [Re, Im] (+ eigenvalue channel for
    ``eigmode``); axis 1 = microphone, axis 2 = eigenvector (column) index.

    * ``eigenvectors`` / ``eigmode``: every column divided by its Euclidean norm (unit length;
      ``orthonormal=True``: complex QR instead, so the columns form a unitary matrix); with
      ``canonical_phase`` each column is then rotated so its ``reference_mic`` entry is real
      and >= 0, as in the real data.
    * ``eigmode``: the eigenvalue channel ``s`` (dB re the largest / 100, see data/csm.py) is
      made non-increasing with ``s_0 = 0``: ``s_j = -sum_{k=1..j} softplus(u_k)`` with ``u``
      the raw channel averaged over rows, then broadcast to every row.
    * ``csm``: Hermitian part ``(X + X^H) / 2``.
    """

    def __init__(self, representation: str = "eigenvectors", reference_mic: int = 0, orthonormal: bool = False,
                 canonical_phase: bool = True, eps: float = 1e-6, **kwargs: Any):
        super().__init__(**kwargs)
        self.representation = representation
        self.reference_mic = int(reference_mic)
        self.orthonormal = bool(orthonormal)
        self.canonical_phase = bool(canonical_phase)
        self.eps = float(eps)

    def call(self, x):
        re, im = x[..., 0], x[..., 1]
        if self.representation == "csm":
            re_t = ops.transpose(re, (0, 2, 1))
            im_t = ops.transpose(im, (0, 2, 1))
            return ops.stack([0.5 * (re + re_t), 0.5 * (im - im_t)], axis=-1)
        if self.orthonormal:
            import tensorflow as tf

            q, _ = tf.linalg.qr(tf.complex(re, im))
            re, im = tf.math.real(q), tf.math.imag(q)
        else:
            norm = ops.sqrt(ops.sum(re * re + im * im, axis=1, keepdims=True) + self.eps ** 2)
            re, im = re / norm, im / norm
        if self.canonical_phase:
            # multiply column j by conj(v_rj) / |v_rj| (a unit phase): (re + i im)(a - i b) / |.|
            a = re[:, self.reference_mic : self.reference_mic + 1, :]
            b = im[:, self.reference_mic : self.reference_mic + 1, :]
            mag = ops.sqrt(a * a + b * b + self.eps ** 2)
            re, im = (re * a + im * b) / mag, (im * a - re * b) / mag
        chans = [re, im]
        if self.representation == "eigmode":
            u = ops.mean(x[..., 2], axis=1)                              # (B, M)
            dec = ops.softplus(u[:, 1:])                                 # positive decrements
            s = ops.concatenate([ops.zeros_like(u[:, :1]), -ops.cumsum(dec, axis=1)], axis=1)
            chans.append(ops.broadcast_to(s[:, None, :], ops.shape(re)))
        return ops.stack(chans, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(representation=self.representation, reference_mic=self.reference_mic,
                   orthonormal=self.orthonormal, canonical_phase=self.canonical_phase, eps=self.eps)
        return cfg


def _get(cfg: Any, key: str, default: Any) -> Any:
    if cfg is None:
        return default
    try:
        val = cfg.get(key, default)
    except AttributeError:
        val = getattr(cfg, key, default)
    return default if val is None else val


def _norm_layer(kind: str, name: str):
    if kind == "layer":
        return keras.layers.LayerNormalization(name=name)
    if kind == "batch":
        return keras.layers.BatchNormalization(name=name)
    if kind in ("none", "", None):
        return None
    raise ConfigError(f"model.generator.norm={kind!r} is invalid; use layer, batch or none")


def build_csm_models(cfg: Any, data: Any, latent_dim: int, conditional: bool) -> tuple[keras.Model, keras.Model]:
    """Generator and critic for ``data.sample_shape`` ``(M, M, C)`` (see module docstring).

    ``cfg``: the ``model`` config node (``conf/model/csm_mlp.yaml``); missing keys take the
    seed defaults. ``conditional`` (a multi-line set, ``dataset.freq_index=all``: the label is the
    frequency line): G takes ``[z, label]`` and concatenates a learned ``LABEL_EMBEDDING``-dim
    embedding of the label to ``z``; D takes ``[x, label]`` and adds a projection term
    ``<embed(label), features>`` to its logit (projection discriminator, Miyato & Koyama 2018).
    """
    k = int(getattr(data, "num_classes", 0) or 0)
    if conditional and k < 2:
        raise ConfigError("model.conditional=true needs several frequency lines; set dataset.freq_index=all "
                          "(or a list) on a multi-line file, or model.conditional=false")
    shape = tuple(int(s) for s in data.sample_shape)
    if len(shape) != 3:
        raise ConfigError(f"model csm_mlp needs (M, M, C) samples, got {shape}; use dataset=csm")
    gcfg = _get(cfg, "generator", {})
    dcfg = _get(cfg, "discriminator", {})
    hidden = list(_get(gcfg, "hidden", [512, 1024]))
    norm = _get(gcfg, "norm", "layer")
    act = _get(gcfg, "activation", "leaky_relu")
    filters = list(_get(dcfg, "filters", [64, 128]))
    kernel = int(_get(dcfg, "kernel_size", 3))
    strides = int(_get(dcfg, "strides", 2))
    slope = _get(dcfg, "negative_slope", 0.2)
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0.0 <= slope < 1.0:
        raise ConfigError(f"model.discriminator.negative_slope must be a number in [0, 1) (the LeakyReLU slope), "
                          f"got {slope!r}; the seed uses 0.2")
    slope = float(slope)
    dropout = float(_get(dcfg, "dropout", 0.0))
    spectral = bool(_get(dcfg, "spectral_norm", False))
    # with train.fast (gan_cli.fast): the last convs + LeakyReLUs + global max pool as one layer with a sparse
    # backward pass (same numbers, a fraction of the backward FLOPs) where the last feature map is large enough
    # for it to pay; not with spectral norm
    fast = fast_mod.enabled() and not spectral
    fused = fast and pooled_positions(shape[:2], len(filters), strides) >= SPARSE_MIN_POSITIONS
    if not hidden or not filters or any(int(h) < 1 for h in hidden + filters):
        raise ConfigError("model.generator.hidden and model.discriminator.filters must be non-empty lists of positive ints")

    z = keras.Input((int(latent_dim),), name="z")
    h = z
    if conditional:
        y = keras.Input((), dtype="int32", name="label")
        h = keras.layers.Concatenate(name="g_cond")([z, keras.layers.Embedding(k, LABEL_EMBEDDING, name="g_label")(y)])
    for i, units in enumerate(hidden):
        h = keras.layers.Dense(int(units), name=f"g_dense{i}")(h)
        nl = _norm_layer(norm, f"g_norm{i}")
        if nl is not None:
            h = nl(h)
        h = keras.layers.Activation(act, name=f"g_act{i}")(h)
    size = 1
    for s in shape:
        size *= s
    h = keras.layers.Dense(size, name="g_out")(h)
    out = keras.layers.Reshape(shape, name="g_reshape")(h)
    transform = csm_output_transform(data)
    if transform is not None:
        out = transform(out)
    generator = keras.Model([z, y] if conditional else z, out, name="csm_generator")

    def sn(layer):  # spectral normalisation (Miyato et al. 2018) of the critic's kernels
        from gan_cli.models.spectral import SpectralNorm

        return SpectralNorm(layer) if spectral else layer

    x = keras.Input(shape, name="x")
    h = x
    # the fused layer takes the last two convs (both kernel gradients then come from the pooled positions)
    pair = fused and len(filters) >= 2
    for i, f in enumerate(filters):
        if pair and i == len(filters) - 2:
            h = ConvLeakyMaxPool(int(filters[-1]), kernel, strides, slope, first_filters=int(f),
                                 name=f"d_conv{i}_{i + 1}")(h)
            break
        if fused and i == len(filters) - 1:
            h = ConvLeakyMaxPool(int(f), kernel, strides, slope, name=f"d_conv{i}")(h)
            break
        h = sn(keras.layers.Conv2D(int(f), kernel, strides=strides, padding="same", name=f"d_conv{i}"))(h)
        # with train.fast the LeakyReLUs differentiate from their outputs (same numbers; lets oneDNN fuse them
        # into the convolution)
        h = (fast_mod.leaky_relu if fast else keras.layers.LeakyReLU)(negative_slope=slope, name=f"d_lrelu{i}")(h)
    else:
        h = keras.layers.GlobalMaxPooling2D(name="d_pool")(h)
    h = keras.layers.Identity(name="features")(h)  # read by feature matching (models/features.py)
    if dropout > 0:
        h = keras.layers.Dropout(dropout, name="d_dropout")(h)
    logits = sn(keras.layers.Dense(1, name="d_logits"))(h)
    if conditional:
        yd = keras.Input((), dtype="int32", name="label")
        emb = keras.layers.Embedding(k, int(h.shape[-1]), name="d_label")(yd)
        logits = keras.layers.Add(name="d_projection")([logits, keras.layers.Dot(axes=1, name="d_label_dot")([h, emb])])
    critic = keras.Model([x, yd] if conditional else x, logits, name="csm_critic")
    return generator, critic


def csm_output_transform(data) -> CsmOutputTransform | None:
    """The CsmOutputTransform of a CSM data set's encoding (representation, reference mic, normalisation);
    None for other data (a CSM model trained on, say, 2D points outputs its samples as they are)."""
    if getattr(data, "kind", None) != "csm":
        return None
    data.prepare()
    return CsmOutputTransform(representation=data.representation, reference_mic=int(data.reference_mic),
                              orthonormal=data.orthonormal, canonical_phase=data.canonical_phase,
                              name="csm_output_transform")
