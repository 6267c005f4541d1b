"""Quality metrics for 2D samples.

* PacGAN protocol (ring, grid): a generated sample is *high quality* when it lies within
  3 std of its nearest mode mean; a mode is *captured* when it is the nearest mean of at
  least one high-quality sample; ``reverse_kl`` = KL(generated mode histogram || uniform)
  over high-quality samples (natural log, as in PacGAN's code).
* GAN Lab: ``kl`` = KL(real || generated) and ``js`` between histograms on a
  ``grid x grid`` window, each cell smoothed by 1e-4, log base 2.
"""

from __future__ import annotations

import numpy as np

# metrics where larger is better (the others here: smaller is better)
HIGHER_IS_BETTER = frozenset({"modes", "high_quality"})


def mode_metrics(samples: np.ndarray, means: np.ndarray, std: float) -> dict[str, float]:
    """``modes`` (count), ``high_quality`` (fraction 0..1), ``reverse_kl`` for samples ``(n, 2)``."""
    d2 = ((samples[:, None, :] - means[None, :, :]) ** 2).sum(-1)  # (n, modes)
    nearest = d2.argmin(axis=1)
    dist = np.sqrt(d2[np.arange(len(samples)), nearest])
    hq = dist <= 3.0 * std
    counts = np.bincount(nearest[hq], minlength=len(means)).astype(np.float64)
    modes = int((counts > 0).sum())
    if counts.sum() > 0:
        p = counts / counts.sum()
        nz = p > 0
        reverse_kl = float((p[nz] * np.log(p[nz] * len(means))).sum())
    else:
        reverse_kl = float("inf")
    return {"modes": float(modes), "high_quality": float(hq.mean()), "reverse_kl": reverse_kl}


def grid_histogram(samples: np.ndarray, bounds: tuple[float, float, float, float], cells: int) -> np.ndarray:
    """Normalised histogram ``(cells, cells)`` of samples in the window; points outside are dropped."""
    xmin, xmax, ymin, ymax = bounds
    h, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=cells, range=[[xmin, xmax], [ymin, ymax]])
    return h / max(len(samples), 1)


def kl_js(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> tuple[float, float]:
    """GAN Lab's smoothed KL(p || q) and JS(p, q) in bits (p: real, q: generated densities)."""
    p, q = p.ravel(), q.ravel()
    m = 0.5 * (p + q)
    kl = float(np.sum((p + eps) * np.log2((p + eps) / (q + eps))))
    js = 0.5 * float(np.sum((p + eps) * np.log2((p + eps) / (m + eps)))
                     + np.sum((q + eps) * np.log2((q + eps) / (m + eps))))
    return kl, js


class Toy2DEvaluator:
    """Scores generated 2D samples against a fixed real reference sample."""

    def __init__(self, reference: np.ndarray, bounds, cells: int, means: np.ndarray | None, std: float | None):
        self.bounds, self.cells, self.means, self.std = bounds, cells, means, std
        self.real_hist = grid_histogram(reference, bounds, cells)

    def __call__(self, samples: np.ndarray, labels=None) -> dict[str, float]:
        samples = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
        out: dict[str, float] = {}
        if not np.all(np.isfinite(samples)):
            samples = np.nan_to_num(samples, nan=1e6, posinf=1e6, neginf=-1e6)
        if self.means is not None:
            out.update(mode_metrics(samples, self.means, self.std))
        out["kl"], out["js"] = kl_js(self.real_hist, grid_histogram(samples, self.bounds, self.cells))
        return out


def toy2d_evaluator(data, num_samples: int, seed: int):
    """Scores generated points against ``num_samples`` fresh samples of ``data`` (a Toy2D data set)."""
    reference = data.sample(num_samples, np.random.default_rng(seed + 1))
    return Toy2DEvaluator(reference, data.bounds(), data.kl_grid, data.means, data.std)
