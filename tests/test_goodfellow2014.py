"""experiment=goodfellow2014 as the authors ran it (Goodfellow et al. 2014, goodfeli/adversarial mnist.yaml):
their initialisation, G's sigmoid output with its bias from the pixel marginals, D's input dropout, the
learning-rate decay and the momentum ramp in epochs, and 200 steps at the paper's lr 0.1 staying finite."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from conftest import build, compose, gan, rows


def test_the_experiment_composes_with_the_authors_settings():
    cfg = compose(["experiment=goodfellow2014"])
    g, d = cfg.model.generator, cfg.model.discriminator
    assert (g.output_activation, g.output_bias, g.init_range) == ("pixel_sigmoid", "marginals", 0.05)
    assert (d.init_range, d.input_dropout, d.dropout, list(d.hidden), d.maxout_pieces) == (0.005, 0.2, 0.5,
                                                                                           [240, 240], 5)
    for net in ("generator", "discriminator"):
        opt = cfg.optimizer[net]
        assert (opt.lr, opt.lr_decay, opt.lr_min, opt.momentum, opt.momentum_final, opt.momentum_epochs) == (
            0.1, 1.000004, 1e-6, 0.5, 0.7, 250)
    assert cfg.train.batch_size == 100 and cfg.train.n_critic == 1


def test_generator_starts_at_the_mean_image_and_d_at_small_weights():
    gan_, cfg, data = build(["dataset=digits"], ["experiment=goodfellow2014"])
    # 250 epochs of the 1438 training digits at batch 100
    assert cfg.optimizer.generator.momentum_steps == round(250 * data.arrays()[0].shape[0] / 100)
    x, _ = data.arrays()
    mean01 = (x.mean(axis=0) + 1) / 2
    z = np.random.default_rng(0).uniform(-1, 1, (256, 100)).astype("float32")
    fake01 = (np.asarray(gan_.generator(z, training=False)) + 1) / 2
    # U[-0.05, 0.05] kernels move the sigmoid only a little away from the marginals at the start
    assert np.abs(fake01.mean(axis=0) - mean01).max() < 0.1
    for v in gan_.discriminator.trainable_variables:
        if "kernel" in v.path:
            assert np.abs(np.asarray(v)).max() <= 0.005
    for v in gan_.generator.trainable_variables:
        if "kernel" in v.path:
            assert np.abs(np.asarray(v)).max() <= 0.05


def test_learning_rate_decays_per_update_to_its_floor():
    import tensorflow as tf

    from gan_cli.training.optimizers import build_optimizer

    opt = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.5, "momentum_final": 0.7,
                           "momentum_steps": 10, "lr_decay": 2.0, "lr_min": 0.01})
    w = tf.Variable([0.0])
    lrs = []
    for _ in range(6):
        lrs.append(float(opt.current_learning_rate(opt.learning_rate)))
        opt.apply_gradients([(tf.constant([1.0]), w)])
    assert lrs == pytest.approx([0.1, 0.05, 0.025, 0.0125, 0.01, 0.01])
    assert float(opt.current_momentum()) == pytest.approx(0.5 + 0.2 * 6 / 10)


def test_200_steps_at_the_papers_learning_rate_stay_finite_on_digits(tmp_path):
    run_dir = tmp_path / "run"
    rc = gan("train", "experiment=goodfellow2014", "dataset=digits", "train.steps=200", "train.eval_every=100",
             "train.checkpoint_every=200", "metrics.num_samples=200", "train.progress=false",
             f"hydra.run.dir={run_dir}")
    assert rc == 0
    for row in rows(run_dir):
        assert math.isfinite(row["d_loss"]) and math.isfinite(row["g_loss"]) and math.isfinite(row["fcd"])
    with h5py.File(run_dir / "checkpoints" / "ckpt_00000200.h5") as f:
        assert f.attrs["round"] == 200
        arrays = []
        f.visititems(lambda name, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    assert arrays and all(np.all(np.isfinite(a)) for a in arrays)
