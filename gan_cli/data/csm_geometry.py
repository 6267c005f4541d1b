"""Microphone-array geometry checks shared by the CSM reader and simulator."""

from __future__ import annotations

import numpy as np

from gan_cli.core.errors import DataError


def validate_geometry(mic_positions: np.ndarray, expected_m: int | None = None,
                      where: str = "microphone geometry") -> np.ndarray:
    """``mic_positions`` as ``(M, 3)`` float64 when physically possible, else one-line DataError.

    Refused: a shape other than ``(M, 3)`` with ``M >= 2``, NaN or infinite coordinates, a
    microphone count other than ``expected_m`` (the CSMs' size), all microphones at one point, or
    two microphones at the same position. Call it before any steering vector or beamforming map.
    """
    pos = np.asarray(mic_positions, dtype=np.float64)
    fix = "give the geometry of the array that recorded the data (dataset.array) or regenerate the file"
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 2:
        raise DataError(f"{where} has shape {pos.shape}, expected (M, 3) with M >= 2 microphones; {fix}")
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise DataError(f"{where}: {int(bad.sum())} of {pos.shape[0]} microphone positions are NaN or infinite "
                        f"(first: mic {int(np.argmax(bad))}); {fix}")
    if expected_m is not None and pos.shape[0] != int(expected_m):
        raise DataError(f"{where} has {pos.shape[0]} microphones but the CSMs are {expected_m} x {expected_m}; {fix}")
    aperture = array_aperture(pos)
    if not aperture > 0:
        raise DataError(f"{where}: all {pos.shape[0]} microphones are at one point {pos[0].tolist()}; {fix}")
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    d[np.diag_indices_from(d)] = np.inf
    i, j = np.unravel_index(np.argmin(d), d.shape)
    if d[i, j] <= 1e-9 * aperture:
        raise DataError(f"{where}: microphones {min(i, j)} and {max(i, j)} are at the same position; {fix}")
    return pos


def array_aperture(mic_positions: np.ndarray) -> float:
    """Maximum pairwise distance of ``(M, 3)`` positions."""
    d = mic_positions[:, None, :] - mic_positions[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())
