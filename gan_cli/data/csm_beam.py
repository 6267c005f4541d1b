"""Beamforming geometry shared by the CSM metrics and models: the map grid and steering vectors.

Conventions are acoular's (Sarradj 2012): the free-field monopole transfer referenced to the
reference microphone, ``h_m = r0 / r_m * exp(-i k (r_m - r0))``, and ``true level`` steering
vectors ``s = h / ||h||^2``, for which ``s^H C s`` is the squared pressure that a source at the
grid point produces at the reference microphone.
"""

from __future__ import annotations

import numpy as np


def map_grid(aperture: float, grid_points: int) -> np.ndarray:
    """``(G, 3)`` grid of ``grid_points^2`` points over ``+-0.5 aperture`` in x and y at ``z = 0.5 aperture``
    (the source region of the simulated and AcouPipe data), x-major like acoular's ``RectGrid``."""
    ext = 0.5 * float(aperture)
    ax = np.linspace(-ext, ext, int(grid_points))
    gx, gy = np.meshgrid(ax, ax, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, 0.5 * float(aperture))], -1)


def monopole_transfer(mic_positions: np.ndarray, points: np.ndarray, frequency: float, c: float,
                      reference_mic: int) -> np.ndarray:
    """Transfer ``(G, M)`` complex128 from ``points (G, 3)`` to the mics, 1 at the reference mic."""
    d = np.asarray(points, np.float64)[:, None, :] - np.asarray(mic_positions, np.float64)[None]
    r = np.sqrt((d ** 2).sum(-1))
    r0 = r[:, reference_mic:reference_mic + 1]
    return r0 / r * np.exp(-1j * 2 * np.pi * float(frequency) / float(c) * (r - r0))


def steering(mic_positions: np.ndarray, points: np.ndarray, frequency: float, c: float,
             reference_mic: int) -> np.ndarray:
    """``true level`` steering vectors ``(G, M)`` complex128."""
    h = monopole_transfer(mic_positions, points, frequency, c, reference_mic)
    return h / (np.abs(h) ** 2).sum(-1, keepdims=True)


def beamform(csm: np.ndarray, steer: np.ndarray, remove_diagonal: bool = True, chunk: int = 256) -> np.ndarray:
    """Conventional beamforming maps ``(n, G)`` of ``csm (n, M, M)``: ``s_g^H C s_g`` per grid point.

    ``remove_diagonal``: acoular's default, the autopowers left out and the result scaled by
    ``M / (M - 1)``, negative values set to 0."""
    csm = np.asarray(csm, np.complex128)
    m = csm.shape[-1]
    out = np.empty((csm.shape[0], steer.shape[0]))
    for i in range(0, csm.shape[0], chunk):
        c = csm[i:i + chunk]
        if remove_diagonal:
            c = c.copy()
            c[:, np.arange(m), np.arange(m)] = 0.0
        cs = np.einsum("nij,gj->ngi", c, steer)                       # C s_g
        val = np.einsum("gi,ngi->ng", steer.conj(), cs).real
        out[i:i + chunk] = np.maximum(val * (m / (m - 1)), 0.0) if remove_diagonal else val
    return out
