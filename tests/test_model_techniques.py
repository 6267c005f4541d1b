"""Minibatch discrimination, virtual batch normalisation and GN-GAN.

Math against numpy references on fixed inputs, GN-GAN's Algorithm 1 ordering, the reference batch in
checkpoints, one end-to-end CLI run per technique group on ring and on digits, and bad input (exit 2).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import conftest
from conftest import TINY, gan, rows

SHORT = ["train.steps=10", "train.eval_every=5", "train.checkpoint_every=10"]
# a tiny DCGAN for 8x8 digits (as tests/test_images_cli.py), 10 rounds, 2 evaluations
TINY_IMG = ["dataset=digits", "train.batch_size=32", "metrics.num_samples=200", "train.progress=false",
            "train.report=false", "latent.dim=8", "model=dcgan", "model.generator.base_channels=8",
            "model.discriminator.base_channels=8", *SHORT]
VBN_MLP = ["model=mlp", "model.generator.batch_norm=virtual", "model.discriminator.batch_norm=virtual",
           "model.vbn_ref_size=16"]
MBD_VBN_MLP = [*VBN_MLP, "model.discriminator.mbd_kernels=6", "model.discriminator.mbd_dim=3"]
MBD_VBN_DCGAN = ["model.discriminator.mbd_kernels=6", "model.discriminator.mbd_dim=3", "model.generator.norm=virtual",
                 "model.discriminator.norm=virtual", "model.vbn_ref_size=16"]


def build(overrides=(), base=TINY):
    """A built (untrained) GAN, its resolved config and dataset."""
    return conftest.build(overrides, base)


# --------------------------------------------------------------------------- minibatch discrimination
def _mbd_numpy(f: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Salimans et al. 2016: M_i = f_i T, o(x_i)_b = sum_j exp(-||M_i,b - M_j,b||_1), output [f, o]."""
    m = np.einsum("na,abc->nbc", f, t)
    o = np.zeros((len(f), t.shape[1]))
    for i in range(len(f)):
        for j in range(len(f)):  # j = i included (exp(0) = 1), as the paper writes the sum
            o[i] += np.exp(-np.abs(m[i] - m[j]).sum(axis=-1))
    return np.concatenate([f, o], axis=1)


def test_minibatch_discrimination_matches_numpy():
    from gan_cli.models.layers import MinibatchDiscrimination

    f = np.array([[0.5, -1.0, 2.0, 0.0], [1.5, 0.25, -0.5, 1.0], [0.5, -1.0, 2.0, 0.1]], np.float32)
    t = np.linspace(-1.0, 1.0, 4 * 3 * 2).reshape(4, 3, 2).astype(np.float32)  # A=4, 3 kernels of 2 dims

    def layer(**kwargs):
        mbd = MinibatchDiscrimination(kernels=3, dim=2, **kwargs)
        mbd.build((None, 4))
        mbd.kernel.assign(t.reshape(4, 6))
        return mbd

    out = np.asarray(layer()(f))  # the paper's sum
    assert out.shape == (3, 4 + 3)
    np.testing.assert_allclose(out, _mbd_numpy(f, t), rtol=1e-5, atol=1e-6)
    # rows 0 and 2 are close, so their closeness to each other is near 1: o > 1 + (far row's term)
    assert np.all(out[0, 4:] > 1.5) and np.all(out[1, 4:] < out[0, 4:])
    mean = np.asarray(layer(average=True)(f))  # mbd_average: the sum over the 3 rows divided by 3
    np.testing.assert_allclose(mean[:, 4:], out[:, 4:] / 3.0, rtol=1e-5)
    # more rows than a group: rows are compared within groups of `group` consecutive rows
    expected = np.concatenate([_mbd_numpy(f[:2], t), _mbd_numpy(f[2:], t)])
    np.testing.assert_allclose(np.asarray(layer(group=2)(f)), expected, rtol=1e-5, atol=1e-6)
    expected[:2, 4:] /= 2.0  # averaged over each group's own rows (the last group has 1)
    np.testing.assert_allclose(np.asarray(layer(group=2, average=True)(f)), expected, rtol=1e-5, atol=1e-6)


def test_minibatch_discrimination_gradient_matches_autodiff():
    """The hand-written gradient of o against autodiff of the plain numpy-style formula (first and second order)."""
    import tensorflow as tf

    from gan_cli.models.layers import _closeness

    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal((5, 4)).astype(np.float32))
    w = tf.constant(rng.normal(0, 0.5, (4, 3 * 2)).astype(np.float32))
    weights = tf.constant(rng.standard_normal((5, 3)).astype(np.float32))

    def plain(m):  # (n, kernels, dim) -> (n, kernels)
        return tf.reduce_sum(tf.exp(-tf.reduce_sum(tf.abs(m[:, None] - m[None, :]), -1)), 1)

    def penalty(fn):
        with tf.GradientTape() as outer:
            outer.watch(w)
            with tf.GradientTape() as inner:
                inner.watch(x)
                m = tf.reshape(x @ w, (-1, 3, 2))
                y = tf.reduce_sum(fn(m) * weights)
            g = inner.gradient(y, x)
            value = tf.reduce_sum(g ** 2)
        return g, outer.gradient(value, w)

    g1, w1 = penalty(plain)
    g2, w2 = penalty(lambda m: tf.transpose(_closeness(tf.transpose(m, (2, 1, 0)))))
    np.testing.assert_allclose(np.asarray(g2), np.asarray(g1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w2), np.asarray(w1), rtol=1e-4, atol=1e-4)


def test_minibatch_discrimination_sits_between_features_and_logits():
    g, _, _ = build(["model=mlp", "model.discriminator.mbd_kernels=5", "model.discriminator.mbd_dim=2"])
    d = g.discriminator
    names = [layer.name for layer in d.layers]
    assert names.index("features") < names.index("minibatch_discrimination") == names.index("logits") - 1
    assert d.get_layer("logits").input.shape[-1] == 128 + 5
    # D now looks at the whole batch: another row changes row 0's logit
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(np.float32)
    y = x.copy()
    y[1:] += 3.0
    assert abs(float(d(x)[0, 0]) - float(d(y)[0, 0])) > 1e-6


# --------------------------------------------------------------------------- virtual batch norm
def test_virtual_batch_norm_uses_reference_statistics_only():
    from gan_cli.models.layers import VirtualBatchNormalization

    rng = np.random.default_rng(1)
    ref = rng.normal(2.0, 3.0, (4, 5)).astype(np.float32)
    x = rng.normal(0.0, 1.0, (3, 5)).astype(np.float32)
    layer = VirtualBatchNormalization(n_ref=4, epsilon=1e-5)
    layer.build((None, 5))
    gamma, beta = np.linspace(0.5, 1.5, 5, dtype=np.float32), np.linspace(-1, 1, 5, dtype=np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    out = np.asarray(layer(np.concatenate([ref, x])))
    mean, var = ref.mean(axis=0), ref.var(axis=0)  # the reference rows' statistics (biased variance)
    np.testing.assert_allclose(out[4:], gamma * (x - mean) / np.sqrt(var + 1e-5) + beta, rtol=1e-5, atol=1e-5)
    other = x.copy()
    other[1:] = 100.0  # other rows of the batch change: row 0's output does not
    np.testing.assert_allclose(np.asarray(layer(np.concatenate([ref, other])))[4], out[4], rtol=1e-6)


def test_vbn_networks_are_row_independent_and_checkpoint_their_reference(tmp_path):
    from gan_cli.run.checkpoint import restore, save_checkpoint
    from gan_cli.models.reference import reference_layers

    a, cfg, data = build(VBN_MLP)  # VBN in G and D, no minibatch discrimination
    g_ref, d_ref = reference_layers(a.generator), reference_layers(a.discriminator)
    assert g_ref["z"].reference.shape == (16, 2) and d_ref["x"].reference.shape == (16, 2)
    real = np.asarray(d_ref["x"].reference)
    assert np.allclose(np.linalg.norm(real, axis=1), 1.0, atol=0.1)  # real ring samples (radius 1)
    z = np.random.default_rng(2).standard_normal((5, 2)).astype(np.float32)
    out = np.asarray(a.generate(z))
    z2 = z.copy()
    z2[1:] = -z2[1:] * 4.0
    np.testing.assert_allclose(np.asarray(a.generate(z2))[0], out[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a.generate(z[:1]))[0], out[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a.critic(out[:1]))[0], np.asarray(a.critic(out))[0], rtol=1e-5, atol=1e-6)
    # another seed draws another reference; a restore brings back the checkpoint's, and with it the outputs
    path = save_checkpoint(a, cfg, tmp_path, keep=1)
    b, _, _ = build([*VBN_MLP, "train.seed=5"])
    assert not np.allclose(np.asarray(reference_layers(b.generator)["z"].reference), np.asarray(g_ref["z"].reference))
    restore(b, path)
    np.testing.assert_allclose(np.asarray(b.generate(z)), out, rtol=1e-6)


# --------------------------------------------------------------------------- GN-GAN math
def _student_t_cond(points: np.ndarray, sigma: float) -> np.ndarray:
    """cond[i, j] = p_j|i exactly as seed 004 writes it (k != i in the normaliser)."""
    points = np.asarray(points, np.float64)
    n = len(points)
    k = np.array([[1.0 / (1.0 + np.sum((points[j] - points[i]) ** 2) / (2 * sigma ** 2)) for j in range(n)]
                  for i in range(n)])
    cond = np.zeros((n, n))
    for i in range(n):
        norm = sum(k[i, m] for m in range(n) if m != i)
        for j in range(n):
            if j != i:
                cond[i, j] = k[i, j] / norm
    return cond


def test_neighbors_embedding_on_four_points():
    from gan_cli.losses.gngan import neighbors_embedding, student_t_conditional

    z = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], np.float32)
    gz = np.array([[0.0, 0.0], [0.5, 0.5], [2.0, 0.0], [1.0, 1.0]], np.float32)
    sz, sx = 1.0, 0.7
    # hand check of one entry: p_1|0 = (1 + 1/2)^-1 / [(1 + 1/2)^-1 + (1 + 4/2)^-1 + (1 + 10/2)^-1]
    p10 = (1 / 1.5) / (1 / 1.5 + 1 / 3.0 + 1 / 6.0)
    np.testing.assert_allclose(np.asarray(student_t_conditional(z, sz))[0, 1], p10, rtol=1e-6)
    n = 4
    pc, qc = _student_t_cond(z, sz), _student_t_cond(gz, sx)
    p = np.array([[(pc[j, i] + pc[i, j]) / (2 * n) for j in range(n)] for i in range(n)])
    q = np.array([[(qc[j, i] + qc[i, j]) / (2 * n) for j in range(n)] for i in range(n)])
    assert abs(p.sum() - 1.0) < 1e-12 and abs(q.sum() - 1.0) < 1e-12
    expected = sum(p[i, j] * math.log(p[i, j] / q[i, j]) for i in range(n) for j in range(n) if i != j)
    assert expected > 0.01
    np.testing.assert_allclose(float(neighbors_embedding(z, gz, sz, sx)), expected, rtol=1e-5)
    assert abs(float(neighbors_embedding(z, z * 2.0, 1.0, 2.0))) < 1e-6  # same structure (scaled): V_R = 0


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_discriminator_objective_v_c_and_penalty():
    import tensorflow as tf

    from gan_cli.losses.gngan import discriminator_loss, interpolate_penalty, reconstruction_term

    real, recon, fake = np.array([[1.0], [2.0]]), np.array([[0.5], [-0.5]]), np.array([[-1.0], [0.3]])
    alpha, lam = 0.3, 2.0
    v_c = np.mean(np.log(_sigmoid(recon)))
    np.testing.assert_allclose(float(reconstruction_term(tf.constant(recon, tf.float32))), v_c, rtol=1e-6)
    v_d = (1 - alpha) * np.mean(np.log(_sigmoid(real))) + alpha * v_c + np.mean(np.log(1 - _sigmoid(fake)))
    got = discriminator_loss(*(tf.constant(a, tf.float32) for a in (real, recon, fake)), penalty=0.25,
                             alpha=alpha, lambda_p=lam)
    np.testing.assert_allclose(float(got), -v_d + lam * 0.25, rtol=1e-6)
    # V_P with a linear critic w.x: the gradient is w everywhere -> (||w|| / sqrt(d) - 1)^2
    w = tf.constant([[3.0], [4.0]])
    x = np.array([[1.0, 2.0], [0.0, -1.0], [2.0, 2.0]], np.float32)
    g = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 3.0]], np.float32)
    vp = interpolate_penalty(lambda t: tf.matmul(t, w), tf.constant(x), tf.constant(g), tf.constant([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(float(vp), (5.0 / math.sqrt(2.0) - 1.0) ** 2, rtol=1e-5)


def test_gradient_matching_against_numpy():
    import tensorflow as tf

    from gan_cli.losses.gngan import gradient_matching, probability_and_gradient

    w, b = np.array([0.7, -1.2], np.float32), 0.3
    critic = lambda t: tf.matmul(t, tf.constant(w[:, None])) + b  # noqa: E731 - logit w.x + b
    x = np.array([[1.0, 0.5], [-0.5, 2.0], [0.2, 0.1]], np.float32)
    g = np.array([[0.0, 1.0], [1.5, -0.5], [2.0, 2.0]], np.float32)
    d_real, grad_real = probability_and_gradient(critic, tf.constant(x))
    d_fake, grad_fake = probability_and_gradient(critic, tf.constant(g))
    dx, dg = _sigmoid(x @ w + b), _sigmoid(g @ w + b)
    gx, gg = (dx * (1 - dx))[:, None] * w, (dg * (1 - dg))[:, None] * w  # grad of sigmoid(w.x + b)
    np.testing.assert_allclose(np.asarray(grad_real), gx, rtol=1e-5, atol=1e-7)
    l1, l2 = 0.5, 2.0
    expected = (abs(dx.mean() - dg.mean()) + l1 * np.sum((gx.mean(0) - gg.mean(0)) ** 2)
                + l2 * (np.mean(np.sum(gx * x, 1)) - np.mean(np.sum(gg * g, 1))) ** 2)
    got = gradient_matching(d_real, d_fake, grad_real, grad_fake, tf.constant(x), tf.constant(g), l1, l2)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_gngan_round_follows_algorithm_1():
    import tensorflow as tf

    from gan_cli.training.gngan import GNGAN

    gan, _, data = build(["loss=gngan", "model=mlp", "model.generator.hidden=[16]", "model.discriminator.hidden=[16]"])
    assert isinstance(gan, GNGAN) and gan.encoder.output_shape == (None, 2)
    # the encoder mirrors D: the same hidden Dense widths, a latent_dim output
    assert [w.shape for w in gan.encoder.trainable_weights] == [(2, 16), (16,), (16, 2), (2,)]
    x = tf.constant(data.real_samples(32, 0)[0])
    nets = {"E": gan.encoder, "G": gan.generator, "D": gan.discriminator}

    def changed(step):
        before = {k: [np.array(v) for v in n.trainable_weights] for k, n in nets.items()}
        step()
        return {k for k, n in nets.items() if any(not np.array_equal(a, np.array(v))
                                                  for a, v in zip(before[k], n.trainable_weights))}

    assert changed(lambda: gan.ae_step(x, 0)) == {"E", "G"}      # line 6: E, G <- min V_AE
    assert changed(lambda: gan.d_step(x, None, 0)) == {"D"}      # line 8: D <- max V_D
    assert changed(lambda: gan.g_step(32, 1, x)) == {"G"}        # line 10: G <- min V_G
    order = []
    for name in ("ae_step", "d_step", "g_step"):
        method = getattr(gan, name)
        setattr(gan, name, lambda *a, _m=method, _n=name, **k: (order.append(_n), _m(*a, **k))[1])
    logs = gan.train_step(tf.reshape(x, (32, 1, 2)))  # one round, eagerly: batch axis first
    assert order == ["ae_step", "d_step", "g_step"]
    assert all(np.isfinite(float(v)) for v in logs.values()) and "ae_loss" in logs


# --------------------------------------------------------------------------- end to end (CLI)
def _check_run(run_dir: Path, keys: tuple[str, ...]) -> None:
    r = rows(run_dir)
    assert [row["step"] for row in r] == [5, 10]
    for key in ("d_loss", "g_loss", *keys):
        assert r[-1][key] is not None and math.isfinite(r[-1][key]), key


# GN-GAN composed with the R1 penalty and feature matching (they act through D's objective and G's)
GNGAN_RING = ["loss=gngan", "model=mlp", "loss.r1_weight=0.5", "loss.feature_matching=0.5"]


@pytest.mark.parametrize("overrides", [MBD_VBN_MLP, GNGAN_RING], ids=["mbd_vbn", "gngan"])
def test_ring_runs_end_to_end(tmp_path, overrides):
    run_dir = tmp_path / "run"
    assert gan("train", *TINY, *SHORT, *overrides, f"hydra.run.dir={run_dir}") == 0
    _check_run(run_dir, ("modes", "high_quality", "kl"))
    if overrides is MBD_VBN_MLP:  # sampling restores the reference batch: the same noise gives the same points
        for name in ("a.npy", "b.npy"):
            assert gan("sample", str(run_dir), "-n", "7", "-o", str(tmp_path / name)) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    else:  # the encoder and its optimizer are in the checkpoint
        import h5py

        with h5py.File(sorted((run_dir / "checkpoints").glob("ckpt_*.h5"))[-1], "r") as ckpt:
            assert len(ckpt["e"]) and len(ckpt["e_opt"])


@pytest.mark.parametrize("overrides", [MBD_VBN_DCGAN, ["loss=gngan"]], ids=["mbd_vbn", "gngan"])
def test_digits_runs_end_to_end(tmp_path, overrides):
    run_dir = tmp_path / "run"
    assert gan("train", *TINY_IMG, *overrides, f"hydra.run.dir={run_dir}") == 0
    _check_run(run_dir, ("fcd", "precision", "recall"))


@pytest.mark.parametrize("overrides, message", [
    (["model=mlp", "model.discriminator.mbd_kernels=-1"], "model.discriminator.mbd_kernels must be an integer >= 0"),
    (["model=mlp", "model.discriminator.mbd_kernels=4", "model.discriminator.mbd_dim=0"],
     "model.discriminator.mbd_dim must be an integer >= 1"),
    (["model=mlp", "model.discriminator.mbd_average=sometimes"], "mbd_average must be true or false"),
    (["model=mlp", "model.generator.batch_norm=sometimes"], "model.generator.batch_norm must be false, true or"),
    (["model=mlp", "model.vbn_ref_size=0"], "model.vbn_ref_size must be an integer >= 1"),
    (["model=csm_mlp", "+model.discriminator.mbd_kernels=4"], "supported by model=mlp, maxout, dcgan"),
    (["loss=gngan", "loss.alpha=1.5"], "loss.alpha must be in [0, 1]"),
    (["loss=gngan", "loss.sigma_x=0"], "loss.sigma_x must be in (0, inf)"),
    (["loss=gngan", "model=mlp", "model.pack=2"], "loss=gngan does not support PacGAN packing"),
    (["loss=gngan", "loss.label_smoothing=0.9"], "loss.label_smoothing applies to"),
])
def test_bad_input_exits_2(tmp_path, capsys, overrides, message):
    assert gan("train", *TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
