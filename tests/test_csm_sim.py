"""Simulator physics, Wishart statistics, determinism and a beamforming sanity check (acoular)."""

from __future__ import annotations

import numpy as np
import pytest

from gan_cli.data.csm_sim import CsmSimulator, SimParams, load_mic_positions, transfer
from gan_cli.core.errors import ConfigError

ARRAY = "minidsp_uma-16"


def sim(**kw) -> CsmSimulator:
    base = dict(array=ARRAY, num_samples=40, mode="analytic")
    base.update(kw)
    return CsmSimulator(SimParams(**base))


def test_geometry_scaled_and_frequency_from_helmholtz():
    s = sim()
    assert s.num_mics == 16 and s.reference_mic == 15
    assert s.aperture == pytest.approx(1.0)
    assert s.frequency == pytest.approx(4.0625 * 343.0 / 1.0)
    assert load_mic_positions("tub_vogel64").shape == (64, 3)
    assert sim(frequency=2000.0).frequency == 2000.0
    with pytest.raises(ConfigError, match="unknown microphone array"):
        load_mic_positions("no_such_array")
    with pytest.raises(ConfigError, match="reference_mic=16"):
        sim(reference_mic=16)
    with pytest.raises(ConfigError, match="mode"):
        sim(mode="welch")


def test_transfer_matches_monopole_formula_and_is_one_at_reference():
    mics = load_mic_positions(ARRAY)
    src = np.array([[0.1, -0.2, 0.5], [0.3, 0.25, 0.5]])
    f, c, ref = 1500.0, 343.0, 15
    h = transfer(mics, src, f, c, ref)
    k = 2 * np.pi * f / c
    rm = np.linalg.norm(src[:, None, :] - mics[None], axis=-1)
    r0 = rm[:, ref:ref + 1]
    np.testing.assert_allclose(h, r0 / rm * np.exp(-1j * k * (rm - r0)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h[:, ref], 1.0, atol=1e-7)


def test_source_layout_follows_acoupipe_distributions():
    s = sim(num_samples=4000)
    num, loc, q, noise = s.draw_sources()
    assert num.min() >= 1 and num.max() <= 10
    assert abs(num.mean() - 4.0) < 0.15                     # Poisson(3) + 1 (rarely capped)
    xy = loc[..., :2][~np.isnan(loc[..., 0])]
    assert np.abs(xy).max() <= 0.5 + 1e-12
    assert np.allclose(loc[..., 2][~np.isnan(loc[..., 2])], 0.5)
    assert abs(np.nanmean(q) - 5 * np.sqrt(np.pi / 2)) < 0.2   # Rayleigh(5) mean
    frac = noise / np.nansum(q, axis=1)
    assert frac.min() >= 1e-5 and frac.max() <= 0.1


def test_analytic_csm_is_hermitian_psd_with_reference_autopower():
    s = sim(num_samples=20)
    d = s.simulate()
    c = d["csm"]
    np.testing.assert_allclose(c, np.conj(np.swapaxes(c, -1, -2)), atol=1e-12)
    assert np.linalg.eigvalsh(c).min() > 0
    num, loc, q, noise = s.draw_sources()
    # H[ref, j] = 1: reference autopower = sum of source powers + noise variance
    np.testing.assert_allclose(c[:, 15, 15].real, np.nansum(q, 1) + noise, rtol=1e-6)


@pytest.mark.parametrize("snapshots", [64, 8])   # Bartlett path (B >= M) and direct path (B < M)
def test_wishart_mean_and_variance(snapshots):
    s = sim(mode="wishart", snapshots=snapshots)
    num, loc, q, noise = s.draw_sources()
    c0 = s.exact_csm(loc[:1], q[:1], noise[:1])[0]
    n = 4000
    draws = s.wishart(np.broadcast_to(c0, (n, 16, 16)).copy(), np.random.default_rng(7))
    scale = np.sqrt(np.outer(c0.diagonal().real, c0.diagonal().real))   # sqrt(C_ii C_jj)
    # E[C_hat] = C: standard error of the mean is scale / sqrt(B n); allow 5 sigma
    err = np.abs(draws.mean(0) - c0) / scale
    assert err.max() < 5 / np.sqrt(snapshots * n)
    # E|C_hat_ij - C_ij|^2 = C_ii C_jj / B (complex Wishart, Isserlis)
    var = (np.abs(draws - c0) ** 2).mean(0) / scale ** 2 * snapshots
    assert abs(var.mean() - 1) < 0.05 and np.abs(var - 1).max() < 0.25
    # relative Frobenius error of a B-snapshot estimate ~ 1/sqrt(B) scale
    rel = np.linalg.norm(draws[:50] - c0, axis=(1, 2)) / np.linalg.norm(c0)
    assert rel.mean() < 3 / np.sqrt(snapshots)


def test_deterministic_in_seed():
    a = sim(mode="wishart", seed=3).simulate()
    b = sim(mode="wishart", seed=3).simulate()
    c = sim(mode="wishart", seed=4).simulate()
    np.testing.assert_array_equal(a["csm"], b["csm"])
    np.testing.assert_array_equal(a["eigenvectors"], b["eigenvectors"])
    assert not np.allclose(a["csm"], c["csm"])


@pytest.mark.parametrize("mode", ["analytic", "wishart"])
def test_beamforming_finds_single_source_within_one_grid_step(mode, tmp_path):
    """Simulate single-source samples, write/read them, beamform with acoular: peak at the source."""
    from gan_cli.data.csm_io import read_csm_file
    from gan_cli.metrics.csm import MapBeamformer

    s = sim(mode=mode, max_sources=1, num_samples=6, seed=11)
    path = s.write(tmp_path / "one.h5", progress=False)
    d = read_csm_file(path)
    assert (d.num_sources == 1).all()
    bf = MapBeamformer(d.mic_positions, d.attrs["frequency"], d.attrs["reference_mic"], extent=0.5, z=0.5,
                       grid_points=21)
    xy, level = bf.peaks(d.csm)
    dist = np.abs(xy - d.loc[:, 0, :2]).max(axis=1)
    assert np.all(dist <= bf.increment + 1e-9), (xy, d.loc[:, 0, :2])
    # peak level ~ the source's squared pressure at the reference mic (true-level steering)
    assert np.all(np.abs(level - 10 * np.log10(d.strength[:, 0])) < 3.0)
