"""model=csm_physics: the source-field layer against the simulator, its Wishart draw, the critic's
features against the metrics' beamformer, and a build on real (simulated) data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from gan_cli.data.csm_beam import beamform, map_grid, steering
from gan_cli.data.csm_sim import CsmSimulator, SimParams, array_aperture, load_mic_positions, transfer
from gan_cli.models.csm_physics import CsmFeatures, SourceFieldCsm, keyed_normal, sample_keys, transfer_ops

UMA = load_mic_positions("minidsp_uma-16", 1.0)
REF = UMA.shape[0] - 1
FREQ = 1393.0


def raw_params(xy: np.ndarray, depth: np.ndarray, q: np.ndarray, noise_frac: float, ap: float) -> np.ndarray:
    """The generator-side raw vector that SourceFieldCsm maps to these sources (its inverse)."""
    c0 = math.log(math.expm1(0.5))
    rz = (np.log(np.expm1(depth / ap)) - c0) / 0.25
    src = np.concatenate([xy / (0.25 * ap), rz[:, None], np.log10(q)[:, None]], axis=1)
    return np.concatenate([src.ravel(), [math.log10(noise_frac) + 1.5]])[None].astype(np.float32)


def test_transfer_matches_acoular():
    src = np.array([[0.1, -0.2, 0.5], [-0.3, 0.05, 0.4]])
    want = transfer(UMA, src, FREQ, 343.0, REF)
    re, im = transfer_ops(tf.constant(src[None], tf.float32), tf.constant(UMA, tf.float32), REF,
                         tf.constant([2 * np.pi * FREQ / 343.0]))
    got = re.numpy()[0] + 1j * im.numpy()[0]
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_exact_field_is_the_simulators_csm():
    ap = array_aperture(UMA)
    xy, depth, q = np.array([[0.1, -0.2], [-0.3, 0.05]]), np.array([0.5, 0.45]), np.array([4.0, 0.5])
    layer = SourceFieldCsm(UMA, FREQ, REF, snapshots=None, num_sources=2)
    out = layer(raw_params(xy, depth, q, 0.01, ap), tf.zeros([1, 4])).numpy()[0]
    sim = CsmSimulator(SimParams(array="minidsp_uma-16", frequency=FREQ))
    loc = np.concatenate([xy, depth[:, None]], 1)[None]
    c = sim.exact_csm(loc, q[None], np.array([0.01 * q.sum()]))[0]
    c = c / c[REF, REF].real
    np.testing.assert_allclose(out[..., 0] + 1j * out[..., 1], c, atol=2e-5)


def test_wishart_draw_has_the_estimators_mean_and_variance():
    # E C_hat = C and E |C_hat_ij - C_ij|^2 = C_ii C_jj / B for a B-snapshot estimate, C_hat = (L T)(L T)^H / B
    b, n = 40, 3000
    layer = SourceFieldCsm(UMA[:4], FREQ, 3, snapshots=b, num_sources=1)
    lfac = np.array([[1.0, 0.3j, 0.0, 0.2], [0.5, 1.0, 0.1j, 0.0], [0.0, 0.2, 1.0, 0.0], [0.1j, 0.0, 0.4, 1.0]])
    c_true = lfac @ lfac.conj().T
    t_re, t_im = layer._wishart_factor(tf.random.stateless_normal([n, 5], seed=[3, 4]), 4)
    x = lfac[None] @ (t_re.numpy() + 1j * t_im.numpy())
    est = x @ np.conj(np.swapaxes(x, 1, 2)) / b
    np.testing.assert_allclose(est.mean(0), c_true, atol=0.06)
    var = (np.abs(est - c_true) ** 2).mean(0)
    want = np.outer(np.diag(c_true).real, np.diag(c_true).real) / b
    np.testing.assert_allclose(var, want, rtol=0.15)


def test_keyed_normals_are_standard_and_depend_only_on_their_own_row():
    z = tf.random.stateless_normal([4000, 8], seed=[5, 6])
    x = keyed_normal(sample_keys(z, 1), (3,)).numpy()
    assert abs(x.mean()) < 0.03 and abs(x.std() - 1) < 0.03 and abs(np.corrcoef(x[:, 0], x[:, 1])[0, 1]) < 0.05
    np.testing.assert_array_equal(keyed_normal(sample_keys(z[7:9], 1), (3,)).numpy(), x[7:9])
    assert not np.array_equal(keyed_normal(sample_keys(z, 2), (3,)).numpy(), x)


def test_generator_output_is_a_deterministic_function_of_each_sample():
    layer = SourceFieldCsm(UMA, FREQ, REF, snapshots=1070, num_sources=3)
    raw = tf.random.stateless_normal([8, 13], seed=[1, 2])
    z = tf.random.stateless_normal([8, 6], seed=[3, 2])
    a = layer(raw, z).numpy()
    np.testing.assert_allclose(layer(raw[2:5], z[2:5]).numpy(), a[2:5], rtol=1e-4, atol=2e-5)
    assert not np.allclose(layer(raw, z * 1.001).numpy(), a)
    c = a[..., 0] + 1j * a[..., 1]
    assert np.allclose(c, np.conj(np.swapaxes(c, 1, 2)), atol=1e-5)
    assert np.linalg.eigvalsh(c).min() > 0 and np.allclose(c[:, REF, REF], 1.0, atol=1e-5)


def test_critic_map_feature_is_the_metrics_beamformer():
    ap = array_aperture(UMA)
    pts = map_grid(ap, 5)
    steer = steering(UMA, pts, FREQ, 343.0, REF)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 16, 20)) + 1j * rng.standard_normal((3, 16, 20))
    c = a @ np.conj(np.swapaxes(a, 1, 2)) / 20
    feats = CsmFeatures(16, ["eig", "map"], grid_size=len(pts))
    feats.steer_re.assign(steer.real[None].astype(np.float32))
    feats.steer_im.assign(steer.imag[None].astype(np.float32))
    x = tf.constant(np.stack([c.real, c.imag], -1).astype(np.float32))
    got = feats(x).numpy()
    eig = 10 * np.log10(np.linalg.eigvalsh(c)[:, ::-1])
    mp = 10 * np.log10(beamform(c, steer, remove_diagonal=False))
    np.testing.assert_allclose(got, np.concatenate([eig, mp], 1), atol=2e-3)


def test_build_on_simulated_data(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_CLI_DATA", str(tmp_path))
    from omegaconf import OmegaConf

    from gan_cli.data.csm import CsmDataset
    from gan_cli.core.errors import ConfigError
    from gan_cli.models import get_builder

    data = CsmDataset(array="minidsp_uma-16", num_samples=64, representation="csm")
    cfg = OmegaConf.create({"generator": {"hidden": [16], "sources": 3}, "discriminator": {"hidden": [16], "grid": 4}})
    g, d = get_builder("csm_physics")(cfg, data, 8, False)
    x = g(tf.random.normal([5, 8])).numpy()
    assert x.shape == (5, 16, 16, 2) and d(x).shape == (5, 1)
    real = data.real_samples(64, seed=0)[0]
    feats = d.get_layer("csm_features")(tf.constant(real)).numpy()
    # standardised with the real data's statistics
    assert abs(feats.mean()) < 0.2 and 0.7 < feats.std() < 1.3
    with pytest.raises(ConfigError, match="representation=csm"):
        get_builder("csm_physics")(cfg, CsmDataset(array="minidsp_uma-16", num_samples=64, representation="eigmode"), 8, False)


def test_keyed_normals_stay_finite_at_the_extremes_of_the_hash():
    # the largest 23-bit value maps to u = 1 - 2^-24, which float32 holds exactly: erfinv stays finite
    from gan_cli.models import csm_physics

    u_max = (np.float32((1 << 23) - 1) + np.float32(0.5)) * np.float32(1.0 / (1 << 23))
    assert u_max < 1.0 and np.isfinite(tf.math.erfinv(2.0 * u_max - 1.0).numpy())
    z = tf.random.stateless_normal([20000, 4], seed=[8, 9])
    assert np.isfinite(csm_physics.keyed_normal(csm_physics.sample_keys(z, 1), (50,)).numpy()).all()
