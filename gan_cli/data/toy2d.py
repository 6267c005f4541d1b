"""2D toy distributions: PacGAN's ring and grid, the parabola of Tan's GAN visualisation report, GAN Lab's shapes.

Samples are float32 arrays of shape ``(N, 2)``. PacGAN protocol (Lin et al. 2018):
ring = 8 Gaussians at radius 1, std 0.01; grid = 25 Gaussians at {-4,-2,0,2,4}^2,
std 0.05; 100,000 training points. GAN Lab's shapes live on [0, 1]^2.
"""

from __future__ import annotations

import numpy as np

from gan_cli.data.base import GanDataset
from gan_cli.core.errors import ConfigError


def ring_means(modes: int = 8, radius: float = 1.0) -> np.ndarray:
    """Means ``(modes, 2)`` at angles 2 pi i / modes on a circle of ``radius``."""
    angles = 2 * np.pi * np.arange(modes) / modes
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def grid_means(side: int = 5, spacing: float = 2.0) -> np.ndarray:
    """Means ``(side**2, 2)`` on a centred square grid, {-4,-2,0,2,4}^2 by default."""
    coords = (np.arange(side) - (side - 1) / 2) * spacing
    xx, yy = np.meshgrid(coords, coords, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


class Toy2D(GanDataset):
    """A 2D distribution sampled once (``num_samples`` points, seeded) and held in memory.

    Args:
        name: ring | grid | parabola | ganlab_gaussians | ganlab_ring | ganlab_line | ganlab_disjoint.
        num_samples: training points (PacGAN: 100,000).
        seed: seed of the training sample.
        std: component std for ring/grid (PacGAN: 0.01 ring, 0.05 grid); null = the protocol's.
        kl_grid: cells per axis of the KL/JS histogram (GAN Lab: 30).
    """

    kind = "toy2d"
    sample_shape = (2,)
    default_model = "mlp"
    default_latent_dim = 2
    # A round on 2D data takes a few milliseconds, so the ~3 ms of host work between compiled calls (Keras's
    # loop, callbacks) is 5% of a 10-round call; 50 rounds per call still last well under a second on a CPU
    # (docs/performance.md: ring +4%, WGAN-GP +7%).
    default_train = {**GanDataset.default_train, "steps_per_execution": 50}

    SHAPES = ("ring", "grid", "parabola", "ganlab_gaussians", "ganlab_ring", "ganlab_line", "ganlab_disjoint")

    def __init__(self, name: str = "ring", num_samples: int = 100_000, seed: int = 0,
                 std: float | None = None, kl_grid: int = 30) -> None:
        if name not in self.SHAPES:
            raise ConfigError(f"unknown 2D dataset '{name}'; valid: {', '.join(self.SHAPES)}")
        if num_samples < 1:
            raise ConfigError(f"dataset.num_samples must be >= 1, got {num_samples}")
        if std is not None and std <= 0:
            raise ConfigError(f"dataset.std must be > 0, got {std}")
        if kl_grid < 2:
            raise ConfigError(f"dataset.kl_grid must be >= 2, got {kl_grid}")
        self.name = name
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.kl_grid = int(kl_grid)
        self.means: np.ndarray | None = None
        self.std = std
        if name == "ring":
            self.means, self.std = ring_means(), (std or 0.01)
        elif name == "grid":
            self.means, self.std = grid_means(), (std or 0.05)
        self.primary_metric = "modes" if self.means is not None else "kl"
        self._x = self.sample(self.num_samples, np.random.default_rng(self.seed))
        self._bounds: tuple[float, float, float, float] | None = None

    # ---- sampling -----------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` fresh points ``(n, 2)`` float32 from the true distribution."""
        if self.means is not None:
            comp = rng.integers(0, len(self.means), size=n)
            x = self.means[comp] + self.std * rng.standard_normal((n, 2))
        elif self.name == "parabola":
            # Tan's GAN visualisation report: x ~ U, y = 10 + x^2 (x on [-2, 2], a small noise keeps the density proper)
            u = rng.uniform(-2.0, 2.0, size=n)
            x = np.stack([u, 10.0 + u**2 + 0.05 * rng.standard_normal(n)], axis=1)
        elif self.name == "ganlab_line":
            r = rng.uniform(size=n)
            x = np.stack([0.8 - 0.75 * r + 0.01 * rng.standard_normal(n),
                          0.6 + 0.3 * r + 0.01 * rng.standard_normal(n)], axis=1)
        elif self.name == "ganlab_gaussians":
            first = rng.uniform(size=n) < 0.5
            a = np.stack([0.3 + 0.1 * rng.standard_normal(n), 0.7 + 0.1 * rng.standard_normal(n)], axis=1)
            b = np.stack([0.7 + 0.05 * rng.standard_normal(n), 0.4 + 0.2 * rng.standard_normal(n)], axis=1)
            x = np.where(first[:, None], a, b)
        elif self.name == "ganlab_ring":
            angle = rng.uniform(0, 2 * np.pi, size=n)
            radius = 0.3 + 0.02 * rng.standard_normal(n)
            x = np.stack([0.5 + radius * np.cos(angle), 0.5 + radius * np.sin(angle)], axis=1)
        else:  # ganlab_disjoint: two separated blobs of different shape
            first = rng.uniform(size=n) < 0.5
            a = np.stack([0.25 + 0.05 * rng.standard_normal(n), 0.75 + 0.05 * rng.standard_normal(n)], axis=1)
            b = np.stack([0.75 + 0.1 * rng.uniform(-1, 1, n), 0.25 + 0.1 * rng.uniform(-1, 1, n)], axis=1)
            x = np.where(first[:, None], a, b)
        return x.astype(np.float32)

    def arrays(self) -> tuple[np.ndarray, None]:
        return self._x, None

    def bounds(self) -> tuple[float, float, float, float]:
        """Plot/histogram window ``(xmin, xmax, ymin, ymax)``: the data's range plus a margin.

        Computed once (the training sample is fixed); every evaluation's snapshot asks for it.
        """
        if self._bounds is None:
            if self.name.startswith("ganlab_"):
                self._bounds = (0.0, 1.0, 0.0, 1.0)
            else:
                lo, hi = np.percentile(self._x, 0.1, axis=0), np.percentile(self._x, 99.9, axis=0)
                pad = 0.25 * (hi - lo) + 1e-3
                self._bounds = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]),
                                float(hi[1] + pad[1]))
        return self._bounds
