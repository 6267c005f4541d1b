"""Sample-quality metrics on feature vectors (pure numpy; any feature space).

All functions take real features ``(N, d)`` and generated features ``(M, d)``
(float arrays) and work in float64. Pairwise distances are Euclidean and are
computed in row chunks so 10,000 x 10,000 comparisons stay within ~100 MB.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1024


# --------------------------------------------------------------------------- Frechet distance
def mean_cov(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of features ``(n, d)``."""
    f = np.asarray(f, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via ``eigh`` (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) * 0.5)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet (2-Wasserstein) distance between Gaussians N(mu1, cov1) and N(mu2, cov2).

    FD = ||mu1 - mu2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2)).
    cov1 cov2 is not symmetric, but it is similar to S cov2 S with S = cov1^(1/2)
    (symmetric PSD), so tr((cov1 cov2)^(1/2)) = sum_i sqrt(eig_i(S cov2 S)).
    """
    s = _sym_sqrt(cov1)
    m = s @ cov2 @ s
    eig = np.clip(np.linalg.eigvalsh((m + m.T) * 0.5), 0.0, None)
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.sqrt(eig).sum())
    return max(fd, 0.0)


def frechet_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between the Gaussian fits of two feature sets ``(n1, d)``, ``(n2, d)``."""
    return frechet_distance(*mean_cov(f1), *mean_cov(f2))


# --------------------------------------------------------------------------- nearest neighbours
def pairwise_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))`` = |a|^2 + |b|^2 - 2 a.b, clipped at 0."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def knn_radii(f: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point of ``f`` ``(n, d)`` to its k-th nearest *other* point -> ``(n,)``.

    Column 0 of each sorted row is the point itself (distance 0), so the k-th
    neighbour is column k (as in the reference implementations).
    """
    f = np.asarray(f, dtype=np.float64)
    if f.shape[0] <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {f.shape[0]}")
    out = np.empty(f.shape[0])
    for i in range(0, f.shape[0], _CHUNK):
        d = pairwise_sq_dists(f[i:i + _CHUNK], f)
        out[i:i + _CHUNK] = np.sqrt(np.partition(d, k, axis=1)[:, k])
    return out


def _ball_counts(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, strict: bool) -> np.ndarray:
    """For each point ``(m, d)``: how many balls B(centre_i, radii_i) contain it -> ``(m,)`` int."""
    counts = np.empty(points.shape[0], dtype=np.int64)
    r2 = radii.astype(np.float64) ** 2
    for i in range(0, points.shape[0], _CHUNK):
        d = pairwise_sq_dists(points[i:i + _CHUNK], centres)
        inside = d < r2[None, :] if strict else d <= r2[None, :]
        counts[i:i + _CHUNK] = inside.sum(1)
    return counts


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     real_radii: np.ndarray | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    precision = fraction of fake samples inside the k-NN ball of at least one real sample;
    recall    = fraction of real samples inside the k-NN ball of at least one fake sample.
    Balls are closed (``<=``) as in the authors' code.
    """
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    fake_radii = knn_radii(fake, k)
    precision = float((_ball_counts(fake, real, real_radii, strict=False) > 0).mean())
    recall = float((_ball_counts(real, fake, fake_radii, strict=False) > 0).mean())
    return precision, recall


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5,
                     real_radii: np.ndarray | None = None) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), using only real-sample k-NN balls (open, ``<``, as in ``prdc``).

    density  = (1 / (k M)) sum_j #{i : fake_j in B(real_i, r_i)}   (about 1 for matching distributions, unbounded);
    coverage = (1 / N) #{i : some fake_j in B(real_i, r_i)}          (in [0, 1]).
    """
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    density = float(_ball_counts(fake, real, real_radii, strict=True).sum() / (k * fake.shape[0]))
    # real_i is covered when its nearest fake sample is inside its own ball.
    nearest = np.empty(real.shape[0])
    for i in range(0, real.shape[0], _CHUNK):
        nearest[i:i + _CHUNK] = np.sqrt(pairwise_sq_dists(real[i:i + _CHUNK], fake).min(1))
    coverage = float((nearest < real_radii).mean())
    return density, coverage


# --------------------------------------------------------------------------- class statistics
def classifier_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """Inception-score analogue: exp(E_x KL(p(y|x) || p(y))) with p(y) the mean prediction; in [1, K]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0)
    py = p.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1))))


def class_histogram_metrics(pred: np.ndarray, num_classes: int, min_share: float = 0.1) -> tuple[int, float]:
    """(classes_covered, class_kl) of predicted labels ``(n,)``.

    classes_covered: classes predicted for at least ``min_share`` of their fair share
    (``min_share * n / K`` samples, and at least one), so a few stray predictions do not count.
    class_kl: KL(h || uniform) = sum_c h_c log(K h_c) of the predicted-label histogram h (nats;
    0 = perfectly balanced, log K = a single class).
    """
    n = max(int(pred.shape[0]), 1)
    counts = np.bincount(np.asarray(pred, dtype=np.int64), minlength=num_classes)[:num_classes]
    covered = int((counts >= max(1.0, min_share * n / num_classes)).sum())
    h = counts / n
    nz = h > 0
    return covered, float(np.sum(h[nz] * np.log(num_classes * h[nz])))


# --------------------------------------------------------------------------- Parzen window
def parzen_log_likelihood(samples: np.ndarray, test: np.ndarray, sigma: float) -> np.ndarray:
    """Log-density of each test point ``(t, D)`` under an isotropic Gaussian Parzen window on ``samples`` ``(n, D)``.

    log p(x) = logsumexp_i(-|x - s_i|^2 / (2 sigma^2)) - log n - (D/2) log(2 pi sigma^2).
    """
    n, dim = samples.shape
    out = np.empty(test.shape[0])
    for i in range(0, test.shape[0], _CHUNK):
        a = -pairwise_sq_dists(test[i:i + _CHUNK], samples) / (2.0 * sigma ** 2)
        amax = a.max(1, keepdims=True)
        out[i:i + _CHUNK] = (amax[:, 0] + np.log(np.exp(a - amax).sum(1)))
    return out - np.log(n) - 0.5 * dim * np.log(2.0 * np.pi * sigma ** 2)


def parzen_select(samples: np.ndarray, valid: np.ndarray, test: np.ndarray,
                  sigmas: np.ndarray | None = None) -> tuple[float, float, float]:
    """Choose sigma maximising the mean validation log-likelihood; return (mean test LL, its std error, sigma).

    Default grid: 16 values log-spaced in [10^-1.5, 1] (the 2014 paper's script uses [0.1, 1]).
    """
    sigmas = np.logspace(-1.5, 0.0, 16) if sigmas is None else np.asarray(sigmas)
    scores = [parzen_log_likelihood(samples, valid, s).mean() for s in sigmas]
    sigma = float(sigmas[int(np.argmax(scores))])
    ll = parzen_log_likelihood(samples, test, sigma)
    return float(ll.mean()), float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1 else 0.0, sigma
