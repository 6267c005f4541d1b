"""Quality metrics for generated cross-spectral matrices (generated vs real, same count).

All functions take complex CSMs ``(n, M, M)`` (normalised so the reference-mic autopower is
about 1) or canonical eigenvectors ``(n, M, M)`` (columns). Lower is better for every metric
except ``psd_rate`` (higher is better, in [0, 1]).

* ``psd_rate``: fraction of generated CSMs that are Hermitian and positive semi-definite.
* ``spectrum_db``: mean over eigenvalue index j of |E_gen dB_j - E_real dB_j|, with
  ``dB_j = 10 log10(lambda_j / lambda_0)`` floored at -120 dB (the primary metric).
* ``source_count_dist``: total-variation distance (in [0, 1]) between the histograms of the
  source count estimated by the largest dB gap among the first ``max_sources + 1`` eigenvalues.
* ``orthonormality_error``: mean ``||V^H V - I||_F / sqrt(M)`` of generated eigenvectors.
* ``peak_position_dist``: exact 2-D Wasserstein-1 distance (m) between the peak positions of
  conventional beamforming maps (acoular ``BeamformerBase``) of generated and real CSMs.
* ``peak_level_dist``: 1-D Wasserstein-1 distance (dB) between the maps' peak levels.
"""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="We detected that Numpy is already loaded")
    import acoular  # noqa: I001
import numpy as np

DB_FLOOR = -120.0


def _hermitian_eigs(csm: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """``(hermitian (n,) bool, eigenvalues of the Hermitian part (n, M) descending)``."""
    c = np.asarray(csm, np.complex128)
    ch = np.conj(np.swapaxes(c, -1, -2))
    scale = np.linalg.norm(c, axis=(-2, -1)) + 1e-30
    herm = np.linalg.norm(c - ch, axis=(-2, -1)) <= tol * scale
    return herm, np.linalg.eigvalsh(0.5 * (c + ch))[:, ::-1]


def _psd_from(herm: np.ndarray, w: np.ndarray, tol: float) -> float:
    return float(np.mean(herm & (w[:, -1] >= -tol * np.abs(w).max(axis=1))))


def _db_from(w: np.ndarray) -> np.ndarray:
    top = np.maximum(w[:, :1], 1e-300)
    return np.maximum(10 * np.log10(np.maximum(w, 1e-300) / top), DB_FLOOR)


def psd_rate(csm: np.ndarray, tol: float = 1e-6) -> float:
    """Fraction of ``csm (n, M, M)`` with ``||C - C^H|| <= tol ||C||`` and ``min eig >= -tol max |eig|``."""
    return _psd_from(*_hermitian_eigs(csm, tol), tol)


def eig_db(csm: np.ndarray) -> np.ndarray:
    """Descending eigenvalues of the Hermitian part of ``csm`` in dB re the largest: ``(n, M)`` in [-120, 0]."""
    return _db_from(_hermitian_eigs(csm, 1.0)[1])


def spectrum_db(gen_db: np.ndarray, real_db: np.ndarray) -> float:
    """Mean absolute difference (dB) of the mean eigenvalue spectra ``(n, M)``."""
    return float(np.mean(np.abs(gen_db.mean(0) - real_db.mean(0))))


def source_count(db: np.ndarray, max_sources: int) -> np.ndarray:
    """Estimated source count ``(n,)`` in [1, max_sources]: position of the largest dB gap."""
    k = min(max_sources, db.shape[1] - 1)
    gaps = db[:, :k] - db[:, 1 : k + 1]       # >= 0: drop from eigenvalue j to j+1
    return np.argmax(gaps, axis=1) + 1


def tv_distance(a: np.ndarray, b: np.ndarray, support: int) -> float:
    """Total-variation distance between histograms of integer samples in [0, support]."""
    pa = np.bincount(a, minlength=support + 1) / max(len(a), 1)
    pb = np.bincount(b, minlength=support + 1) / max(len(b), 1)
    return float(0.5 * np.abs(pa - pb).sum())


def orthonormality_error(v: np.ndarray) -> float:
    """Mean ``||V^H V - I||_F / sqrt(M)`` over ``v (n, M, M)`` complex (columns = eigenvectors)."""
    g = np.conj(np.swapaxes(v, -1, -2)) @ v
    m = v.shape[-1]
    return float(np.mean(np.linalg.norm(g - np.eye(m), axis=(-2, -1)) / np.sqrt(m)))


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two equal-size 1-D samples (mean |sorted a - sorted b|)."""
    return float(np.mean(np.abs(np.sort(a) - np.sort(b))))


def wasserstein_2d(a: np.ndarray, b: np.ndarray) -> float:
    """Exact W1 between two equal-size point sets ``(n, 2)`` via optimal assignment."""
    from scipy.optimize import linear_sum_assignment

    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


class MapBeamformer:
    """Conventional frequency-domain beamforming of CSMs with acoular.

    Grid: ``RectGrid`` of ``grid_points x grid_points`` over ``+-extent`` in x and y at height
    ``z`` (the source plane); steering ``true level`` referenced to the reference microphone,
    diagonal removal on (acoular defaults), so map values estimate the squared source
    pressure at the reference mic in the CSM's units.
    """

    def __init__(self, mic_positions: np.ndarray, frequency: float, reference_mic: int, *,
                 extent: float, z: float, c: float = 343.0, grid_points: int = 21):
        self.frequency = float(frequency)
        inc = 2 * extent / (grid_points - 1)
        self.grid = acoular.RectGrid(x_min=-extent, x_max=extent, y_min=-extent, y_max=extent, z=z, increment=inc)
        mics = acoular.MicGeom(pos_total=np.ascontiguousarray(np.asarray(mic_positions, np.float64).T))
        self.steer = acoular.SteeringVector(grid=self.grid, mics=mics, ref=np.asarray(mic_positions[reference_mic], float),
                                            env=acoular.Environment(c=c))
        self.increment = inc
        m = mics.num_mics
        self.spectra = acoular.PowerSpectraImport(csm=np.eye(m, dtype=np.complex128)[None], frequencies=self.frequency)
        self.bf = acoular.BeamformerBase(freq_data=self.spectra, steer=self.steer, cached=False)
        gpos = self.grid.pos() if callable(self.grid.pos) else self.grid.pos
        self.grid_xy = np.asarray(gpos)[:2].T          # (G, 2), G = grid_points^2

    def maps(self, csm: np.ndarray) -> np.ndarray:
        """Beamforming maps ``(n, G)`` (flattened grid, >= 0) of ``csm (n, M, M)``."""
        out = np.empty((csm.shape[0], self.grid_xy.shape[0]))
        for i, c in enumerate(np.asarray(csm, np.complex128)):
            self.spectra.csm = c[None]
            out[i] = np.asarray(self.bf.synthetic(self.frequency, 0)).reshape(-1)
        return out

    def peaks(self, csm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Peak positions ``(n, 2)`` (m) and peak levels ``(n,)`` (dB, floored at -120) of the maps."""
        mp = self.maps(csm)
        idx = np.argmax(mp, axis=1)
        level = 10 * np.log10(np.maximum(mp[np.arange(len(idx)), idx], 1e-12))
        return self.grid_xy[idx], level


def csm_metrics(gen_csm: np.ndarray, real_csm: np.ndarray, *, max_sources: int,
                gen_vectors: np.ndarray | None = None, beamformer: MapBeamformer | None = None,
                num_beamformed: int = 32, real_cache: dict[str, Any] | None = None) -> dict[str, float]:
    """All metrics for generated vs real CSMs (see module docstring).

    ``gen_vectors``: generated eigenvectors for ``orthonormality_error`` (omitted when None).
    ``beamformer``: enables the two map metrics on the first ``num_beamformed`` samples.
    ``real_cache``: a dict reused across calls to keep the real side's statistics.
    """
    cache = real_cache if real_cache is not None else {}
    if "db" not in cache:
        cache["db"] = eig_db(real_csm)
        cache["count"] = source_count(cache["db"], max_sources)
    gen_csm = np.asarray(gen_csm, np.complex128)
    finite = np.isfinite(gen_csm).all(axis=(-2, -1))
    # non-finite samples (a diverged generator) count as invalid and are zeroed for the rest
    gen_csm = np.where(finite[:, None, None], gen_csm, 0.0)
    herm, w = _hermitian_eigs(gen_csm, 1e-6)
    out: dict[str, float] = {"psd_rate": _psd_from(herm & finite, w, 1e-6)}
    gdb = _db_from(w)
    out["spectrum_db"] = spectrum_db(gdb, cache["db"])
    out["source_count_dist"] = tv_distance(source_count(gdb, max_sources), cache["count"], max_sources)
    if gen_vectors is not None:
        out["orthonormality_error"] = orthonormality_error(np.nan_to_num(gen_vectors))
    if beamformer is not None:
        k = min(num_beamformed, len(gen_csm), len(real_csm))
        if "peak_xy" not in cache or len(cache["peak_xy"]) != k:
            cache["peak_xy"], cache["peak_db"] = beamformer.peaks(real_csm[:k])
        gxy, gdb_peak = beamformer.peaks(gen_csm[:k])
        out["peak_position_dist"] = wasserstein_2d(gxy, cache["peak_xy"])
        out["peak_level_dist"] = wasserstein_1d(gdb_peak, cache["peak_db"])
    return out
