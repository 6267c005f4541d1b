"""Feature matching, unrolled GAN, R1, spectral normalisation, generator EMA and the n_critic schedule
(the training-side options).

Each technique's math against a numpy reference (or the Keras optimizer it mirrors) on fixed inputs,
the schedule counted in optimizer iterations, exact resume with a schedule, one end-to-end CLI run
composing every technique on ring and one on digits, and bad input (exit 2, one line).
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

import conftest
from conftest import TINY, compose, gan, rows

SHORT = ["train.steps=10", "train.eval_every=5", "train.checkpoint_every=5"]
# a tiny DCGAN for 8x8 digits (as tests/test_images_cli.py)
TINY_IMG = ["dataset=digits", "train.batch_size=32", "metrics.num_samples=200", "train.progress=false",
            "train.report=false", "latent.dim=8", "model=dcgan", "model.generator.base_channels=8",
            "model.discriminator.base_channels=8", *SHORT]
# every training-side technique at once (n_critic: 2 per round in rounds 0-4, then 1)
ALL = ["loss.feature_matching=0.5", "train.unroll_steps=1", "loss.r1_weight=1.0",
       "model.discriminator.spectral_norm=true", "train.g_ema=0.9", "train.n_critic={0:2,5:1}"]


def build(overrides=(), base=TINY):
    """A built (untrained) GAN, its resolved config and dataset."""
    return conftest.build(overrides, base)


def one_round(gan, data, cfg, start: int = 0):
    """The real data of round ``start`` (``(B, n_critic, 2)``)."""
    ds = data.tf_dataset(int(cfg.train.batch_size), int(cfg.train.seed), start_step=start, batches_per_step=gan.n_critic)
    return next(iter(ds))


def values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def ring_points(n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)


# --------------------------------------------------------------------------- feature matching
def test_feature_matching_loss_matches_numpy():
    from gan_cli.losses.adversarial import feature_matching_loss

    real = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]], np.float32)
    fake = np.array([[0.0, 1.0, 1.0], [2.0, 1.0, 1.0], [1.0, -2.0, 1.0]], np.float32)
    # means (2, 1, 0.5) and (1, 0, 1): (1)^2 + (1)^2 + (-0.5)^2
    assert float(feature_matching_loss(real, fake)) == pytest.approx(2.25, abs=1e-6)
    # axes after the first are flattened: (B, 3) == (B, 3, 1)
    assert float(feature_matching_loss(real[..., None], fake[..., None])) == pytest.approx(2.25, abs=1e-6)


@pytest.mark.parametrize("only", [False, True])
def test_generator_loss_with_feature_matching(only):
    gan, _, _ = build(["model=mlp", "loss.feature_matching=0.5", f"loss.feature_matching_only={str(only).lower()}"])
    x, fake = ring_points(8, 1), ring_points(8, 2)
    f_real, _ = gan.d_features(x, training=True)
    f_fake, fake_logits = gan.d_features(fake, training=True)
    f_real, f_fake, logits = np.asarray(f_real), np.asarray(f_fake), np.asarray(fake_logits)
    assert f_real.shape == (8, 128)  # the last hidden layer of the default mlp D
    expected = 0.5 * np.sum((f_real.mean(0) - f_fake.mean(0)) ** 2)
    if not only:  # nsgan: + E softplus(-l)
        expected += np.mean(np.log1p(np.exp(-logits)))
    assert float(gan.generator_loss(fake, None, x, None)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("overrides, base, units", [
    (["model=mlp", "model.discriminator.hidden=[16,12]"], TINY, 12),
    (["model=mlp", "model.discriminator.hidden=[16,12]", "model.discriminator.mbd_kernels=4"], TINY, 12),
    (["model.discriminator.base_channels=4"], TINY_IMG, None),
])
def test_discriminators_expose_their_feature_layer(overrides, base, units):
    gan, _, data = build([*overrides, "loss.feature_matching=1.0"], base)
    x = np.zeros((4, *data.sample_shape), np.float32)
    features, logits = gan.d_features(x, training=False)
    assert logits.shape == (4, 1)
    if units is not None:
        assert features.shape == (4, units)
    # the feature layer feeds the rest of D (minibatch discrimination sits after it)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(gan.discriminator(x, training=False)), rtol=1e-6)


def test_csm_critic_has_a_feature_layer():
    from types import SimpleNamespace

    from gan_cli.models.csm import build_csm_models
    from gan_cli.models.features import feature_model

    data = SimpleNamespace(sample_shape=(4, 4, 2))  # not a CSM data set: no output transform
    _, critic = build_csm_models({"discriminator": {"filters": [3, 5], "spectral_norm": True}}, data, 4, False)
    features, logits = feature_model(critic)(np.ones((2, 4, 4, 2), np.float32))
    assert features.shape == (2, 5) and logits.shape == (2, 1)


def test_feature_matching_needs_a_hidden_layer():
    from gan_cli.core.errors import ConfigError

    with pytest.raises(ConfigError, match="layer named 'features'"):
        build(["model=mlp", "model.discriminator.hidden=[]", "loss.feature_matching=1.0"])


# --------------------------------------------------------------------------- R1
@pytest.mark.parametrize("pack", [1, 2])
def test_r1_on_a_linear_discriminator_is_half_gamma_w_squared(pack):
    # D(x) = w.x + b (no hidden layer): grad_x D = w for every sample, so gamma/2 E||grad||^2 = gamma/2 ||w||^2
    gan, _, _ = build(["model=mlp", "model.discriminator.hidden=[]", f"model.pack={pack}", "loss.r1_weight=3.0"])
    x, fake = ring_points(8, 3), ring_points(8, 4)
    w = np.asarray(gan.discriminator.trainable_variables[0].numpy())  # kernel (2 * pack, 1)
    with_r1 = float(gan.discriminator_loss(x, None, fake, 0))
    gan.r1_weight = 0.0
    without = float(gan.discriminator_loss(x, None, fake, 0))
    assert with_r1 - without == pytest.approx(1.5 * np.sum(w ** 2), rel=1e-5)


# --------------------------------------------------------------------------- unrolled GAN
def _optimizer_cases():
    import keras

    from gan_cli.training.momentum_sgd import RampedMomentumSGD

    return [keras.optimizers.Adam(0.01, beta_1=0.5), keras.optimizers.RMSprop(0.01),
            keras.optimizers.RMSprop(0.01, momentum=0.9, centered=True), keras.optimizers.SGD(0.1),
            keras.optimizers.SGD(0.1, momentum=0.5, nesterov=True),
            RampedMomentumSGD(0.1, momentum=0.5, momentum_final=0.7, momentum_steps=3)]


@pytest.mark.parametrize("case", range(6))
def test_functional_update_equals_the_optimizer_update(case):
    """The look-ahead applies exactly the rule (and slot state) of the discriminator's optimizer."""
    import keras
    import tensorflow as tf

    from gan_cli.training.unroll import functional_update, optimizer_state

    opt = _optimizer_cases()[case]
    rng = np.random.default_rng(case)
    variables = [keras.Variable(rng.standard_normal((3, 2)).astype(np.float32)),
                 keras.Variable(rng.standard_normal((2,)).astype(np.float32))]
    opt.build(variables)
    grads = lambda: [tf.constant(rng.standard_normal(v.shape).astype(np.float32)) for v in variables]  # noqa: E731
    for _ in range(2):  # fill the slots
        opt.apply_gradients(zip(grads(), variables))
    state = optimizer_state(opt, variables)
    g1, g2 = grads(), grads()
    params, state = functional_update(opt, [tf.identity(v.value) for v in variables], g1, state, 0)
    params, _ = functional_update(opt, params, g2, state, 1)
    for g in (g1, g2):
        opt.apply_gradients(zip(g, variables))
    for p, v in zip(params, variables):
        np.testing.assert_allclose(np.asarray(p), v.numpy(), rtol=1e-5, atol=1e-6)


def _g_gradient(gan, x, slot=7):
    """G's gradient of its (possibly unrolled) loss on fixed noise and real batch ``x``."""
    import tensorflow as tf

    z = gan.latent(tf.shape(x)[0], slot)
    with tf.GradientTape() as tape:
        fake = gan.generate(z, None, training=True)
        weights = gan._unrolled_weights(z, fake, x, None, slot) if gan.unroll_steps > 0 else None
        loss = gan.generator_loss(fake, None, x, None, weights)
    return [np.asarray(g) for g in tape.gradient(loss, gan.generator.trainable_variables)]


def test_unrolled_generator_gradient_and_untouched_discriminator():
    import tensorflow as tf

    gan, cfg, data = build(["model=mlp", "optimizer=sgd", "optimizer.discriminator.lr=0.5"])
    x = tf.constant(ring_points(32, 5))
    d_before = values(gan.discriminator.weights) + values(gan.d_optimizer.variables)
    plain = _g_gradient(gan, x)
    gan.unroll_steps = 0  # zero look-ahead steps through the stateless path: the plain gradient
    z = gan.latent(32, 7)
    with tf.GradientTape() as tape:
        fake = gan.generate(z, None, training=True)
        loss = gan.generator_loss(fake, None, x, None, [tf.identity(v.value) for v in gan.discriminator.trainable_variables])
    for a, b in zip(plain, tape.gradient(loss, gan.generator.trainable_variables)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-7)
    gan.unroll_steps = 3
    unrolled = _g_gradient(gan, x)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(plain, unrolled)) > 1e-4
    assert all(np.all(np.isfinite(g)) for g in unrolled)
    # one look-ahead step with plain SGD is w - lr * grad_w L_D (checked on the weights themselves)
    gan.unroll_steps = 1
    z = gan.latent(32, 7)
    fake = gan.generate(z, None, training=True)
    (w1,) = [gan._unrolled_weights(z, fake, x, None, 7)]
    with tf.GradientTape() as tape:
        d_loss = gan.discriminator_loss(x, None, fake, 7)
    grads = tape.gradient(d_loss, gan.discriminator.trainable_variables)
    for w, v, g in zip(w1, gan.discriminator.trainable_variables, grads):
        np.testing.assert_allclose(np.asarray(w), v.numpy() - 0.5 * np.asarray(g), rtol=1e-5, atol=1e-6)
    # a whole training round with unrolling: D moves only by its own n_critic update, not the look-ahead
    gan.unroll_steps = 3
    data_round = one_round(gan, data, cfg)
    reference, _, _ = build(["model=mlp", "optimizer=sgd", "optimizer.discriminator.lr=0.5"])
    gan.train_step(data_round)
    reference.train_step(data_round)
    for a, b in zip(values(gan.discriminator.weights) + values(gan.d_optimizer.variables),
                    values(reference.discriminator.weights) + values(reference.d_optimizer.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(values(gan.discriminator.weights), d_before))
    assert any(not np.allclose(a, b) for a, b in zip(values(gan.generator.weights),
                                                      values(reference.generator.weights)))


# --------------------------------------------------------------------------- spectral normalisation
def test_spectral_norm_kernel_has_unit_largest_singular_value():
    import keras

    from gan_cli.models.spectral import SpectralNorm

    layer = SpectralNorm(keras.layers.Dense(5, kernel_initializer=keras.initializers.RandomNormal(0.0, 3.0, seed=1)))
    x = np.ones((2, 7), np.float32)
    layer(x)
    assert np.linalg.svd(layer.kernel.numpy(), compute_uv=False)[0] > 3  # not normalised yet
    assert [v.name for v in layer.non_trainable_variables] == ["vector_u"]
    for _ in range(30):  # one power iteration per training call
        out = layer(x, training=True)
    s = np.linalg.svd(layer.kernel.numpy(), compute_uv=False)
    assert s[0] == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(np.asarray(out), x @ layer.kernel.numpy() + layer.layer.bias.numpy(), rtol=1e-5)


def test_spectral_norm_state_is_checkpointed_and_clipping_composes(tmp_path):
    from gan_cli.run.checkpoint import restore, save_checkpoint, state_groups

    overrides = ["model=mlp", "model.discriminator.spectral_norm=true", "loss=wgan", "model.discriminator.hidden=[8]"]
    gan, cfg, data = build(overrides)
    d_vars = dict(state_groups(gan))["d"]
    assert sum("vector_u" in v.path for v in d_vars) == 2  # hidden Dense and logits Dense
    for i in range(2):
        gan.train_step(one_round(gan, data, cfg, i))
    assert all(np.all(np.isfinite(v)) for v in values(gan.discriminator.weights))
    path = save_checkpoint(gan, cfg, tmp_path, keep=1)
    other, _, _ = build(overrides)
    restore(other, path)
    for a, b in zip(values(gan.discriminator.weights), values(other.discriminator.weights)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- generator EMA
def test_ema_decay_warm_up():
    from gan_cli.training.ema import ema_decay

    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 10) == pytest.approx(11 / 20)
    assert ema_decay(0.15, 10) == 0.15
    assert float(ema_decay(0.15, np.int64(1))) == pytest.approx(0.15)


def test_ema_generator_follows_the_numpy_formula(tmp_path):
    from gan_cli.run.checkpoint import restore, save_checkpoint

    gan, cfg, data = build(["model=mlp", "train.g_ema=0.15", "model.generator.hidden=[8]"])
    ema = values(gan.generator.weights)
    np.testing.assert_array_equal(values(gan.ema_generator.weights)[0], ema[0])  # starts as a copy of G
    for n in range(3):
        gan.train_step(one_round(gan, data, cfg, n))
        d = min(0.15, (1 + n) / (10 + n))  # 0.1, 0.15, 0.15
        ema = [d * e + (1 - d) * w for e, w in zip(ema, values(gan.generator.weights))]
    for a, b in zip(values(gan.ema_generator.weights), ema):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # inference (sampling, evaluation) uses the average; training uses G
    z = ring_points(5, 9)
    np.testing.assert_allclose(np.asarray(gan.generate(z)), np.asarray(gan.ema_generator(z)), rtol=1e-6)
    assert not np.allclose(np.asarray(gan.generate(z)), np.asarray(gan.generate(z, training=True)))
    # checkpointed: a restored GAN samples the same
    path = save_checkpoint(gan, cfg, tmp_path, keep=1)
    other, _, _ = build(["model=mlp", "train.g_ema=0.15", "model.generator.hidden=[8]"])
    restore(other, path, optimizers=False)
    np.testing.assert_array_equal(other.sample(4, seed=3)[0], gan.sample(4, seed=3)[0])


# --------------------------------------------------------------------------- n_critic schedule
def test_critic_schedule_parsing_and_segments():
    from omegaconf import OmegaConf

    from gan_cli.config.schedule import critic_schedule, critic_segments, n_critic_at, slot_stride

    assert critic_schedule(5) == {0: 5}
    assert critic_schedule(OmegaConf.create({25: 5, 0: 100})) == {0: 100, 25: 5}
    assert [n_critic_at({0: 100, 25: 5}, r) for r in (0, 24, 25, 1000)] == [100, 100, 5, 5]
    assert critic_segments({0: 100, 25: 5}, 0, 40) == [(0, 25, 100), (25, 40, 5)]
    assert critic_segments({0: 100, 25: 5}, 30, 40) == [(30, 40, 5)]
    assert critic_segments(3, 7, 7) == []
    assert slot_stride({0: 100, 25: 5}, 1) == 101 and slot_stride(5, 1) == 6  # 6 = the old n_critic + n_gen


def test_fit_calls_end_on_block_boundaries():
    from gan_cli.job.train import _fit_calls

    assert _fit_calls(0, 25, 10) == [(0, 10, 2), (20, 5, 1)]
    assert _fit_calls(25, 40, 10) == [(25, 5, 1), (30, 10, 1)]
    assert _fit_calls(3, 7, 10) == [(3, 4, 1)]
    assert _fit_calls(0, 40, 10) == [(0, 10, 4)]


def test_schedule_counts_discriminator_updates(tmp_path, capsys):
    """rounds 0..24: 100 critic updates each, then 5 (the WGAN reference code's schedule)."""
    from gan_cli.run.checkpoint import latest_checkpoint, restore

    overrides = ["loss=wgan", "model=mlp", "model.generator.hidden=[8]", "model.discriminator.hidden=[8]",
                 "train.steps=30", "train.eval_every=10", "train.checkpoint_every=10", "train.batch_size=8",
                 "metrics.num_samples=200", "train.n_critic={0:100,25:5}"]
    from gan_cli.job.train import train

    capsys.readouterr()
    train(compose([*TINY, *overrides]), tmp_path)
    assert "n_critic {0: 100, 25: 5}" in capsys.readouterr().err  # the start-up line shows the schedule
    assert [r["step"] for r in rows(tmp_path)] == [10, 20, 30]
    model, _, _ = build(overrides)
    assert restore(model, latest_checkpoint(tmp_path)) == 30
    assert int(model.d_optimizer.iterations.numpy()) == 25 * 100 + 5 * 5
    assert int(model.g_optimizer.iterations.numpy()) == 30


# --------------------------------------------------------------------------- end to end
def test_all_techniques_on_ring_and_exact_resume(tmp_path):
    from gan_cli.run.checkpoint import checkpoint_path

    run = tmp_path / "run"
    args = [*TINY, *SHORT, "model=mlp", "model.generator.hidden=[16]", "model.discriminator.hidden=[16,16]", *ALL,
            "train.deterministic=true"]
    assert gan("train", *args, f"hydra.run.dir={run}") == 0
    assert "n_critic:\n    0: 2\n    5: 1\n" in (run / "resolved_config.yaml").read_text()
    r = rows(run)
    assert [x["step"] for x in r] == [5, 10]
    for key in ("d_loss", "g_loss", "modes", "high_quality", "kl"):
        assert all(x[key] is not None and math.isfinite(x[key]) for x in r), key
    import h5py

    with h5py.File(checkpoint_path(run, 10), "r") as f:
        assert "g_ema" in f and "g_opt" in f and "kernel" in f["g_ema/dense"]  # arrays by layer name
    # gan sample draws from the EMA generator of the checkpoint
    assert gan("sample", str(run), "-n", "16", "-o", str(tmp_path / "s.npy")) == 0
    model, _, _ = build(args)
    from gan_cli.run.checkpoint import restore

    restore(model, checkpoint_path(run, 10), optimizers=False)
    sampled = np.load(tmp_path / "s.npy")
    np.testing.assert_allclose(sampled, model.sample(16, seed=0)[0], rtol=1e-5, atol=1e-6)
    z = np.random.default_rng(0).standard_normal((16, 2)).astype(np.float32)  # the noise of --seed 0
    np.testing.assert_allclose(sampled, np.asarray(model.ema_generator(z)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(sampled, np.asarray(model.generator(z)))
    # resume from the step-5 checkpoint (where the schedule switches to 1 critic update): the same state.
    # (Bitwise for each technique alone; composed, G's Adam moments can differ in the last bit.)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    checkpoint_path(copy, 10).unlink()
    assert gan("resume", str(copy)) == 0
    a, b = _checkpoint_arrays(checkpoint_path(run, 10)), _checkpoint_arrays(checkpoint_path(copy, 10))
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-9, err_msg=key)


def _checkpoint_arrays(path) -> dict:
    """Every array of a checkpoint by its name (``g/dense/kernel``, ``d_opt/iteration``, ...)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_all_techniques_on_digits(tmp_path):
    # the schedule (tested on ring above) would trace this heavy step twice; the rest composes on a DCGAN
    run = tmp_path / "run"
    assert gan("train", *TINY_IMG, *ALL[:-1], f"hydra.run.dir={run}") == 0
    r = rows(run)
    assert [x["step"] for x in r] == [5, 10]
    for key in ("d_loss", "g_loss", "fcd", "precision", "recall"):
        assert all(x[key] is not None and math.isfinite(x[key]) for x in r), key
    assert (run / "samples" / "step_00000010.png").is_file()


def test_critic_schedule_on_digits(tmp_path):
    # the schedule on digits with a small MLP (two traced steps stay cheap): 2 D updates per round in
    # rounds 0-4, then 1, so D's optimizer has made 5 * 2 + 5 * 1 updates after 10 rounds
    from gan_cli.run.load import load_for_inference

    run = tmp_path / "run"
    small = ["model=mlp", "model.generator.hidden=[32]", "model.discriminator.hidden=[32]"]
    assert gan("train", *[o for o in TINY_IMG if not o.startswith("model")], *small, "train.n_critic={0:2,5:1}",
               f"hydra.run.dir={run}") == 0
    assert [x["step"] for x in rows(run)] == [5, 10]
    assert all(math.isfinite(x["fcd"]) for x in rows(run))
    from gan_cli.run.checkpoint import latest_checkpoint, restore

    _, _, model = load_for_inference(run)
    assert restore(model, latest_checkpoint(run)) == 10  # with the optimizers' state
    assert int(model.d_optimizer.iterations.numpy()) == 5 * 2 + 5 * 1
    assert int(model.g_optimizer.iterations.numpy()) == 10


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("override, needle", [
    ("train.n_critic={1:5}", "must start at round 0"),
    ("train.n_critic={0:5,a:2}", "schedule key 'a' must be a round number"),
    ("train.n_critic={0:5,-3:2}", "schedule key -3 must be a round number"),
    ("train.n_critic={0:0}", "schedule count 0 (from round 0) must be an integer >= 1"),
    ("train.n_critic={0:2.5}", "schedule count 2.5"),
    ("train.n_critic={}", "train.n_critic schedule is empty"),
    ("train.n_critic=0", "train.n_critic must be >= 1"),
    ("loss.feature_matching=-1", "loss.feature_matching must be a number >= 0"),
    ("loss.r1_weight=-0.5", "loss.r1_weight must be a number >= 0"),
    ("loss.feature_matching_only=true", "loss.feature_matching_only=true needs a feature-matching weight"),
    ("train.unroll_steps=-1", "train.unroll_steps must be >= 0"),
    ("train.g_ema=1.0", "train.g_ema must be a decay in [0, 1)"),
    ("train.g_ema=-0.1", "train.g_ema must be >= 0"),
    ("model=maxout +model.discriminator.spectral_norm=true", "does not support activation maxout"),
    ("model=mlp model.discriminator.activation=maxout model.discriminator.spectral_norm=true", "maxout"),
])
def test_bad_technique_options_exit_2_with_one_line(tmp_path, capsys, override, needle):
    capsys.readouterr()
    assert gan("train", *TINY, *override.split(), f"hydra.run.dir={tmp_path / 'run'}") == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not (tmp_path / "run" / "checkpoints").exists()
