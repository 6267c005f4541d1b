"""2D data sets and the PacGAN / GAN Lab metrics on hand-checkable inputs."""

import numpy as np
import pytest

from gan_cli.metrics import evaluator_for
from gan_cli.data.toy2d import Toy2D, grid_means, ring_means
from gan_cli.metrics.toy2d import kl_js, mode_metrics


def test_protocol_geometry():
    ring = ring_means()
    assert ring.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 1.0)
    grid = grid_means()
    assert grid.shape == (25, 2)
    assert sorted(set(grid[:, 0])) == [-4, -2, 0, 2, 4]


def test_dataset_shapes_and_std():
    data = Toy2D("grid", num_samples=20000, seed=1)
    x, y = data.arrays()
    assert x.shape == (20000, 2) and x.dtype == np.float32 and y is None
    offsets = x - data.means[np.argmin(((x[:, None] - data.means[None]) ** 2).sum(-1), axis=1)]
    assert offsets.std() == pytest.approx(0.05, rel=0.05)


def test_real_batches_stateless_and_without_autotuning():
    """The real-batch stream: element s is a pure function of (seed, s) (resume continues it), and
    tf.data's autotuning is off (its model thread made deleting an iterator wait; data.base.fixed_pipeline)."""
    data = Toy2D("ring", num_samples=1000)
    ds = data.tf_dataset(8, seed=3, batches_per_step=2)
    assert ds.options().autotune.enabled is False
    first = [x.numpy() for x in ds.take(4)]
    assert first[0].shape == (8, 2, 2)
    resumed = next(iter(data.tf_dataset(8, seed=3, start_step=2, batches_per_step=2))).numpy()
    np.testing.assert_array_equal(resumed, first[2])


def test_mode_metrics_by_hand():
    means = ring_means()
    std = 0.01
    # 3 samples on mode 0, 1 on mode 2, 1 far away (low quality)
    samples = np.array([means[0], means[0] + 0.02, means[0] - 0.02, means[2], [0.0, 0.0]])
    m = mode_metrics(samples, means, std)
    assert m["modes"] == 2
    assert m["high_quality"] == pytest.approx(4 / 5)
    p = np.array([3 / 4, 1 / 4])
    assert m["reverse_kl"] == pytest.approx(float((p * np.log(p * 8)).sum()))


def test_all_modes_uniform_gives_zero_reverse_kl():
    means = grid_means()
    m = mode_metrics(np.repeat(means, 4, axis=0), means, 0.05)
    assert m["modes"] == 25 and m["high_quality"] == 1.0 and m["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_kl_js_ganlab_definition():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([0.0, 0.0, 0.5, 0.5])
    kl, js = kl_js(p, p)
    assert kl == pytest.approx(0.0) and js == pytest.approx(0.0)
    kl, js = kl_js(p, q)
    eps = 1e-4
    expect_kl = 2 * (0.5 + eps) * np.log2((0.5 + eps) / eps) + 2 * eps * np.log2(eps / (0.5 + eps))
    assert kl == pytest.approx(expect_kl)
    assert 0.9 < js <= 1.0  # disjoint supports: JS close to 1 bit


def test_evaluator_real_beats_collapsed():
    data = Toy2D("ring", num_samples=5000)
    ev = evaluator_for(data, 2500, seed=0)
    real = ev(data.sample(2500, np.random.default_rng(5)))
    collapsed = ev(np.tile(data.means[:1], (2500, 1)))
    assert real["modes"] == 8 and real["high_quality"] > 0.97
    assert collapsed["modes"] == 1 and collapsed["reverse_kl"] == pytest.approx(np.log(8))
    assert real["js"] < collapsed["js"]
