"""A physics-structured GAN for microphone-array CSMs (``model=csm_physics``).

The generator does not output matrix entries. Its MLP maps ``z`` to the parameters of a sound
field, and a fixed, differentiable layer turns them into the CSM that the array would measure.
Every sample is therefore a valid CSM by construction, as in the physical-prior generator of
Karakonstantis & Fernandez-Grande (2023), which outputs plane-wave coefficients:

* ``K`` monopole sources, each with a position ``(x, y, z)`` and a squared strength ``q``
  (``q = 10^u`` for the MLP's output ``u``, times a presence gate ``sigmoid(4 g)`` with
  ``gates``, so that a slot switches a source on or off and source counts can be discrete);
* uncorrelated microphone noise ``sigma^2 = sum_k q_k * 10^v``;
* the exact CSM ``C = H diag(q) H^H + sigma^2 I``, with ``H`` the free-field monopole transfer
  referenced to the reference microphone (``H[m, k] = r0_k / r_mk * exp(-i kw (r_mk - r0_k))``,
  as acoular's ``SteeringVector.transfer``);
* with ``snapshots`` ``B`` set, a ``B``-snapshot estimate of it: a complex Wishart draw
  ``C_hat = (L T)(L T)^H / B``, ``L = [H diag(sqrt q), sigma I]`` and ``T`` the lower-triangular
  Bartlett factor (``|T_ii|^2 ~ Gamma(B - i)``, ``T_ij ~ CN(0, 1)`` below the diagonal);
* normalised by its reference-mic autopower, as the real data are.

The Wishart noise comes from a counter-based hash of each sample's own ``z`` (all in ``keras.ops``),
so the generator is a deterministic function of its input: resumed runs, ``gan sample`` and
exported models give the same CSM for the same noise vector, whatever the batch.

The critic sees what a beamforming person reads off a CSM: a fixed ``CsmFeatures`` layer computes
the eigenvalue spectrum in dB and the conventional beamforming map in dB over the source region,
standardised with the real data's statistics, and an MLP scores them (optionally with the
normalised matrix entries as well, ``discriminator.inputs``).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from gan_cli.data.csm_beam import map_grid, steering
from gan_cli.core.errors import ConfigError
from gan_cli.models.csm import _get  # a model-config key, its default when missing or null

# per source: x, y, depth, log10 strength (+ a presence logit with gates); plus one log10 noise fraction
PARAMS_PER_SOURCE = 4
GATE_SLOPE = 4.0   # presence = sigmoid(GATE_SLOPE * logit): near 0 or 1 for logits beyond about +-1


def transfer_ops(src, mics, ref: int, wavenumber):
    """Monopole transfer ``(re, im)``, each ``(B, K, M)``, from sources ``src (B, K, 3)`` to mics ``(M, 3)``.

    ``wavenumber``: ``(B,)``. ``H[..., ref] == 1`` (acoular's reference-mic convention)."""
    d = src[:, :, None, :] - mics[None, None, :, :]
    r = ops.sqrt(ops.sum(d * d, axis=-1) + 1e-12)                       # (B, K, M)
    r0 = r[:, :, ref:ref + 1]
    phase = -ops.reshape(wavenumber, (-1, 1, 1)) * (r - r0)
    return r0 / r * ops.cos(phase), r0 / r * ops.sin(phase)


# A counter-based random number generator in keras.ops (the "lowbias32" integer hash of C. Wellons,
# on 32-bit words kept in int64 so that no product overflows). It gives each sample its own stream
# keyed on its latent vector, so the same z gives the same CSM in training, in `gan sample` and in
# an exported model, whatever the batch.
_MASK32 = 0xFFFFFFFF


def _i64(v):
    """An int64 constant (keras.ops' bitwise ops take tensors on both sides when traced symbolically)."""
    return ops.convert_to_tensor(np.asarray(v, np.int64))


def _mul32(a, b: int):
    """``a * b mod 2^32`` for int64 tensors ``a`` in [0, 2^32) and a constant ``b`` < 2^32."""
    b_lo, b_hi = _i64(b & 0xFFFF), _i64(b >> 16)
    a_lo, a_hi = ops.bitwise_and(a, _i64(0xFFFF)), ops.right_shift(a, _i64(16))
    mid = ops.bitwise_and(a_hi * b_lo + a_lo * b_hi, _i64(0xFFFF))
    return ops.bitwise_and(a_lo * b_lo + ops.left_shift(mid, _i64(16)), _i64(_MASK32))


def _hash32(x):
    x = ops.bitwise_xor(x, ops.right_shift(x, _i64(16)))
    x = _mul32(x, 0x7FEB352D)
    x = ops.bitwise_xor(x, ops.right_shift(x, _i64(15)))
    x = _mul32(x, 0x846CA68B)
    return ops.bitwise_xor(x, ops.right_shift(x, _i64(16)))


def sample_keys(z, salt: int):
    """One 32-bit key ``(B,)`` int64 per row of ``z (B, D)``: a hash of its values quantised to 2^-16."""
    q = ops.cast(ops.floor(ops.cast(z, "float32") * 65536.0), "int64")
    q = ops.bitwise_and(q, _i64(_MASK32))                               # two's complement low word
    weights = [(2654435761 * (j + 1) + 97 * salt) & _MASK32 for j in range(int(z.shape[-1]))]
    mixed = _hash32(ops.bitwise_and(q + _i64(weights), _i64(_MASK32)))
    return _hash32(ops.bitwise_and(ops.sum(mixed, axis=-1) + _i64(salt), _i64(_MASK32)))


def keyed_normal(keys, shape: tuple[int, ...]):
    """Standard normals ``(B, *shape)`` float32: row ``i`` is a pure function of ``keys[i]``."""
    count = int(np.prod(shape))
    idx = np.arange(count, dtype=np.int64) * 0x9E3779B9 & _MASK32
    x = ops.bitwise_xor(ops.reshape(keys, (-1, 1)), _i64(idx))
    bits = ops.right_shift(_hash32(_hash32(x)), _i64(9))                 # 23 random bits
    u = (ops.cast(bits, "float32") + 0.5) * (1.0 / (1 << 23))             # in [2^-24, 1 - 2^-24], exact in float32
    return ops.reshape(math.sqrt(2.0) * ops.erfinv(2.0 * u - 1.0), (-1, *shape))


def _as_list(x: Any) -> list:
    return [float(v) for v in np.atleast_1d(np.asarray(x, np.float64))]


@keras.saving.register_keras_serializable(package="gan_cli")
class SourceFieldCsm(keras.layers.Layer):
    """Raw source parameters ``(B, K * P + 1)`` and the latent ``z`` -> normalised CSM ``(B, M, M, 2)``
    [Re, Im] (module docstring); ``z`` keys the Wishart noise. Written in ``keras.ops`` only, so that an
    exported generator holds it as it is.

    ``frequencies``: one frequency (Hz), or one per class label; with several, ``call`` takes the
    labels ``(B,)`` as a third input and models each sample at its line's frequency."""

    def __init__(self, mic_positions, frequencies, reference_mic: int, c: float = 343.0,
                 snapshots: int | None = 1070, num_sources: int = 10, gates: bool = False, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mic_positions = np.asarray(mic_positions, np.float64).reshape(-1, 3).tolist()
        self.frequencies = _as_list(frequencies)
        self.reference_mic = int(reference_mic)
        self.c = float(c)
        self.snapshots = None if not snapshots else int(snapshots)
        self.num_sources = int(num_sources)
        self.gates = bool(gates)
        self.per_source = PARAMS_PER_SOURCE + int(self.gates)
        pos = np.asarray(self.mic_positions)
        self.aperture = float(np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1)).max())

    def call(self, raw, z, labels=None):
        m, k, ap = len(self.mic_positions), self.num_sources, self.aperture
        raw = ops.cast(raw, "float32")
        src = ops.reshape(raw[:, : k * self.per_source], (-1, k, self.per_source))
        # positions: x, y around the array axis; depth > 0 (softplus), 0.5 aperture at a zero input
        xy = 0.25 * ap * src[..., :2]
        depth = ap * ops.softplus(src[..., 2:3] * 0.25 + math.log(math.expm1(0.5)))
        q = ops.power(10.0, ops.clip(src[..., 3], -8.0, 4.0))                   # (B, K)
        if self.gates:  # a source slot switched on or off as a whole, so source counts can be discrete
            q = q * ops.sigmoid(GATE_SLOPE * src[..., 4])
        noise = ops.sum(q, axis=1) * ops.power(10.0, ops.clip(raw[:, -1] - 1.5, -8.0, 1.0))
        mics = ops.convert_to_tensor(np.asarray(self.mic_positions, np.float32))
        kw = ops.convert_to_tensor(np.asarray(self.frequencies, np.float32) * (2 * math.pi / self.c))
        if len(self.frequencies) > 1:
            kw = ops.take(kw, ops.cast(ops.reshape(labels, (-1,)), "int32"))
        else:
            kw = kw[0] * ops.ones_like(raw[:, 0])
        h_re, h_im = transfer_ops(ops.concatenate([xy, depth], axis=-1), mics, self.reference_mic, kw)
        amp = ops.sqrt(q)[:, None, :]
        eye = ops.eye(m)[None] * ops.sqrt(noise)[:, None, None]
        # L = [H diag(sqrt q), sigma I] (B, M, K + M) as real and imaginary parts
        l_re = ops.concatenate([ops.transpose(h_re, (0, 2, 1)) * amp, eye], axis=2)
        l_im = ops.concatenate([ops.transpose(h_im, (0, 2, 1)) * amp, ops.zeros_like(eye)], axis=2)
        if self.snapshots:
            t_re, t_im = self._wishart_factor(z, k + m)
            scale = 1.0 / math.sqrt(self.snapshots)
            l_re, l_im = ((ops.matmul(l_re, t_re) - ops.matmul(l_im, t_im)) * scale,
                          (ops.matmul(l_re, t_im) + ops.matmul(l_im, t_re)) * scale)
        lt_re, lt_im = ops.transpose(l_re, (0, 2, 1)), ops.transpose(l_im, (0, 2, 1))
        c_re = ops.matmul(l_re, lt_re) + ops.matmul(l_im, lt_im)              # L L^H
        c_im = ops.matmul(l_im, lt_re) - ops.matmul(l_re, lt_im)
        ref = self.reference_mic
        pref = c_re[:, ref:ref + 1, ref:ref + 1]
        return ops.stack([c_re / pref, c_im / pref], axis=-1)

    def _wishart_factor(self, z, p: int):
        """``(re, im)`` of the Bartlett factor ``T (B, p, p)`` of ``W = T T^H ~ CWishart_p(snapshots, I)``
        (with fewer snapshots than ``p``: the ``p x snapshots`` snapshot matrix itself), keyed on ``z``.

        The diagonal's ``sqrt(Gamma(snapshots - i))`` comes from a normal through the Wilson-Hilferty
        cube (Wilson & Hilferty 1931), accurate to a fraction of a percent in the quantiles for the
        hundreds of degrees of freedom of averaged CSMs."""
        n = self.snapshots
        keys = sample_keys(z, 1)
        if n < p:
            a = keyed_normal(keys, (p, n, 2)) * math.sqrt(0.5)
            return a[..., 0], a[..., 1]
        a = keyed_normal(keys, (p, p, 3)) * math.sqrt(0.5)
        strict = ops.convert_to_tensor(np.tril(np.ones((p, p), np.float32), -1))
        alpha = float(n) - np.arange(p, dtype=np.float64)
        v = 1.0 / (9.0 * alpha)
        mean, std = (ops.convert_to_tensor(x.astype(np.float32)) for x in (1.0 - v, np.sqrt(2.0 * v)))
        g = ops.convert_to_tensor(alpha.astype(np.float32)) * ops.power(ops.maximum(mean + a[:, :, 0, 2] * std, 0.0), 3.0)
        t_re = a[..., 0] * strict + ops.eye(p)[None] * ops.sqrt(g)[:, :, None]
        return t_re, a[..., 1] * strict

    def compute_output_shape(self, raw_shape, z_shape=None, labels_shape=None):
        m = len(self.mic_positions)
        return (raw_shape[0], m, m, 2)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(mic_positions=self.mic_positions, frequencies=self.frequencies, reference_mic=self.reference_mic,
                   c=self.c, snapshots=self.snapshots, num_sources=self.num_sources, gates=self.gates)
        return cfg


@keras.saving.register_keras_serializable(package="gan_cli")
class CsmFeatures(keras.layers.Layer):
    """Normalised CSM ``(B, M, M, 2)`` -> standardised features ``(B, F)`` for the critic.

    ``inputs``: any of ``eig`` (eigenvalues in dB, descending, ``(B, M)``), ``map`` (conventional
    beamforming map in dB with the full CSM, ``Re(s^H C s)`` for the grid's steering vectors
    ``s``, ``(B, G)``) and ``csm`` (the matrix entries, ``(B, 2 M^2)``). ``steering``: ``(L, G, M)``
    complex steering vectors per frequency line (``L = 1``, or one per label). Each feature is
    shifted and scaled by the constants ``mean`` / ``std`` (set by ``adapt`` from real data)."""

    def __init__(self, num_mics: int, inputs=("eig", "map"), num_lines: int = 1, grid_size: int = 0, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.num_mics = int(num_mics)
        self.inputs = [str(s) for s in inputs]
        self.num_lines = int(num_lines)
        self.grid_size = int(grid_size)
        m, g = self.num_mics, self.grid_size
        self.size = sum({"eig": m, "map": g, "csm": 2 * m * m}[s] for s in self.inputs)
        self.steer_re = self.add_weight(shape=(self.num_lines, g, m), initializer="zeros", trainable=False, name="steer_re")
        self.steer_im = self.add_weight(shape=(self.num_lines, g, m), initializer="zeros", trainable=False, name="steer_im")
        self.mean = self.add_weight(shape=(self.size,), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(self.size,), initializer="ones", trainable=False, name="std")

    def raw(self, x, labels=None):
        x = tf.cast(x, tf.float32)
        c = tf.complex(x[..., 0], x[..., 1])
        c = 0.5 * (c + tf.linalg.adjoint(c))
        parts = []
        for kind in self.inputs:
            if kind == "eig":
                lam = tf.math.real(tf.linalg.eigvalsh(c))[:, ::-1]
                parts.append(10.0 * tf.math.log(tf.maximum(lam, 1e-8)) / math.log(10.0))
            elif kind == "map":
                s = tf.complex(self.steer_re, self.steer_im)                         # (L, G, M)
                # map value at grid point g: s_g^H C s_g (the source power there, for true-level steering)
                if self.num_lines > 1:
                    s = tf.gather(s, tf.cast(tf.reshape(labels, [-1]), tf.int32))     # (B, G, M)
                    cs = tf.matmul(s, c, transpose_b=True)                           # (C s_g)^T per row g
                    val = tf.reduce_sum(tf.math.conj(s) * cs, axis=-1)
                else:
                    cs = tf.einsum("bij,gj->bgi", c, s[0])
                    val = tf.reduce_sum(tf.math.conj(s[0])[None] * cs, axis=-1)
                parts.append(10.0 * tf.math.log(tf.maximum(tf.math.real(val), 1e-8)) / math.log(10.0))
            else:
                parts.append(tf.reshape(x, [tf.shape(x)[0], -1]))
        return tf.concat(parts, axis=-1)

    def call(self, x, labels=None):
        return (self.raw(x, labels) - self.mean) / self.std

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(num_mics=self.num_mics, inputs=self.inputs, num_lines=self.num_lines, grid_size=self.grid_size)
        return cfg


def _line_frequencies(data) -> list[float]:
    lines = getattr(data, "line_frequencies", None)
    if lines:
        return [float(f) for f in lines]
    if not getattr(data, "frequency", None):
        raise ConfigError("model=csm_physics needs the data's frequency; set dataset.frequency (Hz) or dataset.helmholtz")
    return [float(data.frequency)]


def build_csm_physics(cfg: Any, data: Any, latent_dim: int, conditional: bool) -> tuple[keras.Model, keras.Model]:
    """Generator and critic of ``model=csm_physics`` (module docstring; keys in conf/model/csm_physics.yaml)."""
    if getattr(data, "kind", None) != "csm":
        raise ConfigError("model=csm_physics models microphone-array CSMs; use dataset=csm (whose default model it is)")
    if getattr(data, "representation", "csm") != "csm":
        raise ConfigError(f"model=csm_physics generates whole CSMs; set dataset.representation=csm "
                          f"(got {data.representation!r}) or use model=csm_mlp")
    data.prepare()
    if data.mic_positions is None:
        raise ConfigError("model=csm_physics needs the array geometry; set dataset.array to the file's microphone array")
    freqs = _line_frequencies(data)
    if conditional != (len(freqs) > 1):
        raise ConfigError("model=csm_physics is conditional exactly when the data has several frequency lines; "
                          f"set model.conditional={'true' if len(freqs) > 1 else 'false'}")
    gcfg, dcfg = _get(cfg, "generator", {}), _get(cfg, "discriminator", {})
    hidden = [int(h) for h in _get(gcfg, "hidden", [256, 256])]
    num_sources = int(_get(gcfg, "sources", 0)) or int(getattr(getattr(data, "params", None), "max_sources", 10))
    snapshots = _get(gcfg, "snapshots", "auto")
    if snapshots == "auto":  # the data's own: its file's attributes, else the simulation keys
        attrs = getattr(data, "attrs", None) or {}
        mode = str(attrs.get("mode", data.params.mode))
        snapshots = int(attrs.get("snapshots", data.params.snapshots)) if mode == "wishart" else 0
    d_hidden = [int(h) for h in _get(dcfg, "hidden", [512, 512])]
    inputs = list(_get(dcfg, "inputs", ["eig", "map"]))
    grid = int(_get(dcfg, "grid", 16))
    slope = float(_get(dcfg, "negative_slope", 0.2))
    bad = [s for s in inputs if s not in ("eig", "map", "csm")]
    if bad or not inputs:
        raise ConfigError(f"model.discriminator.inputs={inputs} is invalid; use a non-empty list of eig, map, csm")
    if not hidden or not d_hidden or min(hidden + d_hidden) < 1 or num_sources < 1 or grid < 2:
        raise ConfigError("model.generator.hidden / model.discriminator.hidden must be non-empty lists of positive "
                          "ints, model.generator.sources >= 1 and model.discriminator.grid >= 2")
    if snapshots and int(snapshots) < 1:
        raise ConfigError(f"model.generator.snapshots must be auto, 0 (exact CSMs) or >= 1, got {snapshots!r}")

    m, ref = int(data.num_mics), int(data.reference_mic)
    num_lines = len(freqs)
    z = keras.Input((int(latent_dim),), name="z")
    g_inputs = [z]
    h = z
    if conditional:
        y = keras.Input((), dtype="int32", name="y")
        g_inputs.append(y)
        h = keras.layers.Concatenate(name="g_concat")([z, keras.layers.Embedding(num_lines, 16, name="g_embed")(y)])
    for i, units in enumerate(hidden):
        h = keras.layers.Dense(units, name=f"g_dense{i}")(h)
        h = keras.layers.LeakyReLU(negative_slope=0.2, name=f"g_act{i}")(h)
    gates = bool(_get(gcfg, "gates", True))
    raw = keras.layers.Dense(num_sources * (PARAMS_PER_SOURCE + int(gates)) + 1, name="g_params")(h)
    field = SourceFieldCsm(data.mic_positions, freqs, ref, c=float(data.c), snapshots=int(snapshots) or None,
                           num_sources=num_sources, gates=gates, name="source_field")
    out = field(raw, z, g_inputs[1]) if conditional else field(raw, z)
    generator = keras.Model(g_inputs if conditional else z, out, name="csm_physics_generator")

    points = map_grid(float(data.aperture), grid)
    feats = CsmFeatures(m, inputs, num_lines=num_lines, grid_size=len(points), name="csm_features")
    x = keras.Input((m, m, 2), name="x")
    d_inputs = [x]
    if conditional:
        yd = keras.Input((), dtype="int32", name="y")
        d_inputs.append(yd)
        h = feats(x, yd)
        h = keras.layers.Concatenate(name="d_concat")([h, keras.layers.Embedding(num_lines, 16, name="d_embed")(yd)])
    else:
        h = feats(x)
    for i, units in enumerate(d_hidden):
        h = keras.layers.Dense(units, name=f"d_dense{i}")(h)
        h = keras.layers.LeakyReLU(negative_slope=slope, name=f"d_act{i}")(h)
    h = keras.layers.Identity(name="features")(h)  # read by feature matching (models/features.py)
    logits = keras.layers.Dense(1, name="d_logits")(h)
    critic = keras.Model(d_inputs if conditional else x, logits, name="csm_physics_critic")
    _adapt_features(feats, data, points, freqs, conditional)
    return generator, critic


def _adapt_features(feats: CsmFeatures, data: Any, points: np.ndarray, freqs: list[float], conditional: bool,
                    n: int = 512) -> None:
    """Fill the feature layer's steering vectors and the mean/std of its features on ``n`` real samples."""
    steer = np.stack([steering(data.mic_positions, points, f, float(data.c), int(data.reference_mic)) for f in freqs])
    feats.steer_re.assign(steer.real.astype(np.float32))
    feats.steer_im.assign(steer.imag.astype(np.float32))
    x, labels = data.real_samples(min(n, max(int(getattr(data, "num_samples", n)), 2)), seed=12345)
    lab = None
    if conditional:
        lab = tf.constant(np.asarray(labels, np.int32))
    f = feats.raw(tf.constant(np.asarray(x, np.float32)), lab).numpy().astype(np.float64)
    feats.mean.assign(f.mean(0).astype(np.float32))
    feats.std.assign(np.maximum(f.std(0), 1e-3).astype(np.float32))
