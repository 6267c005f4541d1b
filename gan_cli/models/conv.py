"""DCGAN generator and discriminator (Radford et al. 2016) for ``(H, W, C)`` images in [-1, 1].

Resolution plan: the number ``k`` of stride-2 steps is how often H and W can both be
halved while staying even and >= ``min_base`` (default 4): 8x8 -> 4x4 (k=1),
28x28 -> 7x7 (k=2), 32x32 -> 4x4 (k=3), 64x64 -> 4x4 (k=4).

G: z ``(B, latent)`` [+ one-hot/embedded y] -> Dense -> BN -> ReLU -> Reshape
``(H/2^k, W/2^k, g * 2^k)`` -> k x [Conv2DTranspose stride 2 -> BN -> ReLU] (channels halve)
-> Conv2D 3x3 to C channels -> tanh.

D: x ``(B, H, W, C)`` [+ y as one-hot channels (``concat``)] -> k x [Conv2D stride 2 ->
(norm) -> LeakyReLU 0.2 -> (dropout)] (channels double from ``d``) -> Conv2D 3x3 stride 1
block -> Flatten -> Dense 1 (linear logits). ``conditioning: projection`` adds
<embed(y), features> to the logit instead (Miyato & Koyama 2018).
"""

from __future__ import annotations

from typing import Any

from gan_cli.core.errors import ConfigError
from gan_cli.models.output import output_transform


def _get(cfg: Any, *keys: str, default: Any = None) -> Any:
    """Nested lookup in a dict / DictConfig / attribute object, ``default`` when missing or None."""
    node = cfg
    for key in keys:
        if node is None:
            return default
        if isinstance(node, dict) or hasattr(node, "keys"):
            node = node.get(key, None) if hasattr(node, "get") else None
        else:
            node = getattr(node, key, None)
    return default if node is None else node


def resolution_steps(h: int, w: int, min_base: int = 4) -> int:
    """Number of stride-2 steps k: halve (h, w) while both are even and stay >= ``min_base``."""
    k = 0
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= min_base and w // 2 >= min_base:
        h, w, k = h // 2, w // 2, k + 1
    return k


def _norm(kind: str, name: str, n_ref: int = 0):
    import keras

    if kind == "virtual":  # statistics of the n_ref reference rows in front of the batch (gan_cli.models.reference)
        from gan_cli.models.layers import VirtualBatchNormalization

        return VirtualBatchNormalization(n_ref, name=name)
    if kind == "batch":
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)
    if kind == "layer":
        return keras.layers.LayerNormalization(axis=[-3, -2, -1], name=name)  # over (H, W, C)
    if kind in ("none", None):
        return None
    raise ConfigError(f"normalisation '{kind}'; valid: batch, layer, virtual, none")


def _label_vector(y, num_classes: int, mode: str, dim: int, name: str):
    """``(B,)`` int labels -> ``(B, K)`` one-hot or ``(B, dim)`` learned embedding."""
    import keras

    if mode == "onehot":
        return keras.layers.CategoryEncoding(num_tokens=num_classes, output_mode="one_hot", name=name)(y)
    if mode == "embed":
        return keras.layers.Embedding(num_classes, dim, name=name)(y)
    raise ConfigError(f"model.label_encoding={mode}; valid: onehot, embed")


def build_dcgan(cfg: Any, data: Any, latent_dim: int, conditional: bool):
    """Build ``(G, D)`` for ``data.sample_shape == (H, W, C)``; see the module docstring for the layers.

    Args:
        cfg: the ``model`` config node (``conf/model/dcgan.yaml``).
        data: a dataset with ``sample_shape`` (H, W, C), ``num_classes`` and ``output_transform()``.
        latent_dim: size of z.
        conditional: add a label input ``y`` ``(B,)`` int32 to both networks.

    Returns:
        G: ``z (B, latent_dim)`` [, ``y (B,)``] -> images ``(B, H, W, C)`` in (-1, 1).
        D: ``x (B, H, W, C)`` [, ``y (B,)``] -> logits ``(B, 1)``.
    """
    import keras

    from gan_cli import fast
    from gan_cli.models.layers import MinibatchDiscrimination
    from gan_cli.models.reference import DEFAULT_REF_SIZE, drop, prepend

    if len(data.sample_shape) != 3:
        raise ConfigError(f"model=dcgan needs image data (H, W, C); dataset '{data.name}' has samples of shape "
                          f"{tuple(data.sample_shape)}; choose model=mlp or an image dataset")
    h, w, c = (int(s) for s in data.sample_shape)
    num_classes = int(getattr(data, "num_classes", 0) or 0)
    if conditional and num_classes < 2:
        raise ConfigError(f"model.conditional=true needs labelled data; dataset '{data.name}' has no labels; "
                          "set model.conditional=false")
    conditioning = _get(cfg, "conditioning", default="concat")
    if conditioning not in ("concat", "projection"):
        raise ConfigError(f"model.conditioning={conditioning}; valid: concat, projection")
    label_mode = _get(cfg, "label_encoding", default="onehot")
    label_dim = int(_get(cfg, "label_dim", default=16))
    k = resolution_steps(h, w, int(_get(cfg, "min_base", default=4)))
    std = float(_get(cfg, "init_std", default=0.02))
    init = (lambda: keras.initializers.RandomNormal(0.0, std)) if std > 0 else (lambda: "glorot_uniform")

    g_base = int(_get(cfg, "generator", "base_channels", default=64))
    g_max = int(_get(cfg, "generator", "max_channels", default=512))
    g_kernel = int(_get(cfg, "generator", "kernel_size", default=4))
    g_norm = _get(cfg, "generator", "norm", default="batch")
    d_base = int(_get(cfg, "discriminator", "base_channels", default=64))
    d_max = int(_get(cfg, "discriminator", "max_channels", default=512))
    d_kernel = int(_get(cfg, "discriminator", "kernel_size", default=4))
    d_norm = _get(cfg, "discriminator", "norm", default="none")
    dropout = float(_get(cfg, "discriminator", "dropout", default=0.0))
    spectral = bool(_get(cfg, "discriminator", "spectral_norm", default=False))
    for name, v in (("generator.base_channels", g_base), ("discriminator.base_channels", d_base)):
        if v < 1:
            raise ConfigError(f"model.{name}={v}; use a positive integer such as 64")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.discriminator.dropout={dropout}; use a value in [0, 1)")
    mbd_kernels = int(_get(cfg, "discriminator", "mbd_kernels", default=0))
    mbd_dim = int(_get(cfg, "discriminator", "mbd_dim", default=5))
    mbd_average = bool(_get(cfg, "discriminator", "mbd_average", default=True))
    n_ref = int(_get(cfg, "vbn_ref_size", default=DEFAULT_REF_SIZE))
    g_ref = n_ref if g_norm == "virtual" else 0            # virtual batch norm: reference rows in front
    d_ref = n_ref if d_norm == "virtual" and k > 0 else 0  # D has no norm layer when k == 0

    # ------------------------------------------------------------------ generator
    z = keras.Input(shape=(latent_dim,), name="z")
    g_inputs = [z]
    hcur = prepend(z, g_ref, "z", "g_reference")
    if conditional:
        y_g = keras.Input(shape=(), dtype="int32", name="y")
        g_inputs.append(y_g)
        y_g_all = prepend(y_g, g_ref, "y", "g_reference_label")
        hcur = keras.layers.Concatenate(name="z_y")([hcur, _label_vector(y_g_all, num_classes, label_mode, label_dim,
                                                                          "g_label")])
    bh, bw = h >> k, w >> k
    ch = min(g_base * 2 ** k, g_max)
    hcur = keras.layers.Dense(bh * bw * ch, use_bias=g_norm != "batch", kernel_initializer=init(), name="g_project")(hcur)
    hcur = keras.layers.Reshape((bh, bw, ch), name="g_reshape")(hcur)
    if (n := _norm(g_norm, "g_norm0", g_ref)) is not None:
        hcur = n(hcur)
    hcur = keras.layers.ReLU(name="g_relu0")(hcur)
    for i in range(1, k + 1):
        ch = min(g_base * 2 ** (k - i), g_max)
        hcur = keras.layers.Conv2DTranspose(ch, g_kernel, strides=2, padding="same", use_bias=g_norm != "batch",
                                            kernel_initializer=init(), name=f"g_up{i}")(hcur)
        if (n := _norm(g_norm, f"g_norm{i}", g_ref)) is not None:
            hcur = n(hcur)
        hcur = keras.layers.ReLU(name=f"g_relu{i}")(hcur)
    hcur = drop(hcur, g_ref, "g_drop_reference")
    out = keras.layers.Conv2D(c, 3, padding="same", activation="tanh", kernel_initializer=init(), name="g_out")(hcur)
    transform = output_transform(data)
    if transform is not None:
        out = transform(out)
    generator = keras.Model(g_inputs if conditional else z, out, name="generator")

    # ------------------------------------------------------------------ discriminator
    def sn(layer):
        from gan_cli.models.spectral import SpectralNorm  # Miyato et al. 2018

        return SpectralNorm(layer) if spectral else layer

    x = keras.Input(shape=(h, w, c), name="x")
    d_inputs = [x]
    hcur = prepend(x, d_ref, "x", "d_reference")
    y_d = None
    if conditional:
        y_d = keras.Input(shape=(), dtype="int32", name="y")
        d_inputs.append(y_d)
        if conditioning == "concat":
            y_d_all = prepend(y_d, d_ref, "y", "d_reference_label")
            onehot = keras.layers.CategoryEncoding(num_tokens=num_classes, output_mode="one_hot", name="d_label")(y_d_all)
            maps = keras.layers.Reshape((1, 1, num_classes), name="d_label_reshape")(onehot)
            maps = keras.layers.UpSampling2D(size=(h, w), name="d_label_maps")(maps)  # (B, H, W, K)
            hcur = keras.layers.Concatenate(axis=-1, name="x_y")([hcur, maps])
    ch = d_base
    for i in range(k):
        ch = min(d_base * 2 ** i, d_max)
        hcur = sn(keras.layers.Conv2D(ch, d_kernel, strides=2, padding="same", kernel_initializer=init(),
                                      name=f"d_conv{i}"))(hcur)
        if i > 0 and (n := _norm(d_norm, f"d_norm{i}", d_ref)) is not None:  # DCGAN: no norm on the first layer
            hcur = n(hcur)
        hcur = fast.leaky_relu(0.2, name=f"d_lrelu{i}")(hcur)
        if dropout > 0:
            hcur = keras.layers.Dropout(dropout, name=f"d_drop{i}")(hcur)
    ch = min(ch * 2, d_max) if k > 0 else d_base
    hcur = sn(keras.layers.Conv2D(ch, 3, padding="same", kernel_initializer=init(), name="d_conv_last"))(hcur)
    if k > 0 and (n := _norm(d_norm, "d_norm_last", d_ref)) is not None:
        hcur = n(hcur)
    hcur = fast.leaky_relu(0.2, name="d_lrelu_last")(hcur)
    if dropout > 0:
        hcur = keras.layers.Dropout(dropout, name="d_drop_last")(hcur)
    hcur = drop(hcur, d_ref, "d_drop_reference")
    feat = keras.layers.Flatten(name="features")(hcur)  # read by feature matching (models/features.py)
    head = feat
    if mbd_kernels > 0:  # minibatch discrimination between D's features and its logits
        head = MinibatchDiscrimination(mbd_kernels, mbd_dim, average=mbd_average, name="minibatch_discrimination")(feat)
    logits = sn(keras.layers.Dense(1, kernel_initializer=init(), name="d_logits"))(head)
    if conditional and conditioning == "projection":
        # Projection discriminator: logit = psi(phi(x)) + <embed(y), phi(x)>.
        emb = keras.layers.Embedding(num_classes, int(feat.shape[-1]), name="d_label_embed")(y_d)
        proj = keras.layers.Dot(axes=1, name="d_projection")([emb, feat])
        logits = keras.layers.Add(name="d_logits_cond")([logits, proj])
    discriminator = keras.Model(d_inputs if conditional else x, logits, name="discriminator")
    return generator, discriminator
