"""CSM metrics on fixed inputs: c2st calibration, the vectorised beamformer against acoular, W1, floors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gan_cli.data.csm_sim import CsmSimulator, SimParams, array_aperture
from gan_cli.metrics.csm import MapBeamformer, c2st, csm_metrics, wasserstein_2d


@pytest.fixture(scope="module")
def sets():
    """Two disjoint real sets of 120 normalised 16-mic CSMs each, and the simulator."""
    sim = CsmSimulator(SimParams(array="minidsp_uma-16", num_samples=240, seed=3))
    c = sim.simulate()["csm"]
    c = c / c[:, sim.reference_mic, sim.reference_mic].real[:, None, None]
    return c[:120], c[120:], sim


def test_c2st_is_chance_for_one_distribution_and_one_for_separable_sets():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((200, 10)), rng.standard_normal((200, 10))
    assert abs(c2st(a, b) - 0.5) < 0.1
    assert c2st(a, b + 3.0) > 0.97


def test_beamformer_matches_acoular(sets):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="We detected that Numpy is already loaded")
        import acoular
    real, _, sim = sets
    ap = sim.aperture
    bf = MapBeamformer(sim.mic_positions, sim.frequency, sim.reference_mic, extent=0.5 * ap, z=0.5 * ap, grid_points=7)
    grid = acoular.RectGrid(x_min=-0.5 * ap, x_max=0.5 * ap, y_min=-0.5 * ap, y_max=0.5 * ap, z=0.5 * ap,
                            increment=ap / 6)
    mics = acoular.MicGeom(pos_total=np.ascontiguousarray(sim.mic_positions.T))
    steer = acoular.SteeringVector(grid=grid, mics=mics, ref=sim.mic_positions[sim.reference_mic])
    for c in real[:3]:
        spectra = acoular.PowerSpectraImport(csm=c[None].astype(np.complex128), frequencies=sim.frequency)
        want = np.asarray(acoular.BeamformerBase(freq_data=spectra, steer=steer, cached=False)
                          .synthetic(sim.frequency, 0)).reshape(-1)
        np.testing.assert_allclose(bf.maps(c[None])[0], want, rtol=1e-4, atol=1e-6 * want.max())


def test_exact_w1_of_shifted_point_sets():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(50, 2))
    assert wasserstein_2d(a, a[::-1]) == pytest.approx(0.0, abs=1e-12)
    assert wasserstein_2d(a, a + [0.3, 0.4]) == pytest.approx(0.5, abs=1e-9)


def test_real_sets_score_near_their_floor_and_noise_far_from_it(sets):
    real, other, sim = sets
    ap = sim.aperture
    bf = MapBeamformer(sim.mic_positions, sim.frequency, sim.reference_mic, extent=0.5 * ap, z=0.5 * ap, grid_points=9)
    cache: dict = {}
    kw = dict(max_sources=10, beamformer=bf, aperture=ap, floor_csm=other, real_cache=cache)
    same = csm_metrics(other, real, **kw)
    rng = np.random.default_rng(2)
    a = rng.standard_normal((120, 16, 40)) + 1j * rng.standard_normal((120, 16, 40))
    noise = a @ np.conj(np.swapaxes(a, 1, 2)) / 40
    noise /= noise[:, sim.reference_mic, sim.reference_mic].real[:, None, None]
    bad = csm_metrics(noise, real, **kw)
    for key in ("c2st", "spectrum_db", "source_count_dist", "peak_w1", "peak_level_dist"):
        assert same[key] == pytest.approx(same[f"{key}_floor"])   # the floor is this very comparison
        assert bad[key] > same[key]
    assert abs(same["c2st"] - 0.5) < 0.12 and bad["c2st"] > 0.95
    assert same["psd_rate"] == 1.0 and bad["psd_rate"] == 1.0
    assert 0 < same["peak_w1"] < 0.2 and same["peak_w1"] == pytest.approx(
        wasserstein_2d(bf.peaks(other)[0], bf.peaks(real)[0]) / array_aperture(sim.mic_positions))
