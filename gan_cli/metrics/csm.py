"""Quality metrics for generated cross-spectral matrices (generated vs real, same count).

All functions take complex CSMs ``(n, M, M)`` normalised so the reference-mic autopower is about
1, or canonical eigenvectors ``(n, M, M)`` (columns). Lower is better for every metric except
``psd_rate`` (higher is better, in [0, 1]); ``c2st`` is best at 0.5.

* ``c2st``: classifier two-sample test (Lopez-Paz & Oquab 2017): the 5-fold cross-validated
  accuracy of a gradient-boosted classifier telling real from generated CSMs, on the features a
  beamforming person reads: the 16 largest eigenvalues in dB and the beamforming map in dB.
  0.5 = indistinguishable, 1.0 = always told apart.
* ``psd_rate``: fraction of generated CSMs that are Hermitian and positive semi-definite.
* ``spectrum_db``: mean over eigenvalue index j of |E_gen dB_j - E_real dB_j|, with
  ``dB_j = 10 log10(lambda_j / lambda_0)`` floored at -120 dB.
* ``source_count_dist``: total-variation distance (in [0, 1]) between the histograms of the
  source count estimated by the largest dB gap among the first ``max_sources + 1`` eigenvalues.
* ``orthonormality_error``: mean ``||V^H V - I||_F / sqrt(M)`` of generated eigenvectors.
* ``peak_w1``: exact 2-D Wasserstein-1 distance, in apertures, between the peak positions of
  the conventional beamforming maps (acoular's conventions, diagonal removed) of generated and
  real CSMs.
* ``peak_level_dist``: 1-D Wasserstein-1 distance (dB) between the maps' peak levels.

Each comparison metric also comes with ``<name>_floor``: its value between two disjoint real
sets of the same size, the best a generator can expect at that sample size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gan_cli.core.errors import DataError
from gan_cli.data.base import Evaluator
from gan_cli.data.csm_beam import beamform, map_grid, steering
from gan_cli.data.csm_io import fmt_hz

# metrics where larger is better (the others here: smaller is better)
HIGHER_IS_BETTER = frozenset({"psd_rate"})

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
    """Conventional frequency-domain beamforming of CSMs (acoular's ``BeamformerBase`` defaults).

    Grid: ``grid_points x grid_points`` points over ``+-extent`` in x and y at height ``z`` (the
    source plane); ``true level`` steering referenced to the reference microphone, diagonal
    removed, so map values estimate the squared source pressure at the reference microphone in
    the CSM's units (``gan_cli.data.csm_beam``).
    """

    def __init__(self, mic_positions: np.ndarray, frequency: float, reference_mic: int, *,
                 extent: float, z: float, c: float = 343.0, grid_points: int = 21):
        self.frequency = float(frequency)
        pts = map_grid(2 * extent, grid_points)
        pts[:, 2] = z
        self.grid_xy = pts[:, :2]                        # (G, 2), G = grid_points^2
        self.increment = 2 * extent / (grid_points - 1)
        self.steer = steering(mic_positions, pts, self.frequency, c, int(reference_mic))

    def maps(self, csm: np.ndarray) -> np.ndarray:
        """Beamforming maps ``(n, G)`` (flattened grid, >= 0) of ``csm (n, M, M)``."""
        return beamform(csm, self.steer)

    def peaks(self, csm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Peak positions ``(n, 2)`` (m) and peak levels ``(n,)`` (dB, floored at -120) of the maps."""
        return self.peaks_of(self.maps(csm))

    def peaks_of(self, mp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Peak positions and levels of maps ``(n, G)``."""
        idx = np.argmax(mp, axis=1)
        level = 10 * np.log10(np.maximum(mp[np.arange(len(idx)), idx], 1e-12))
        return self.grid_xy[idx], level


def map_db(mp: np.ndarray) -> np.ndarray:
    """Beamforming maps in dB, floored at -120 dB."""
    return 10 * np.log10(np.maximum(mp, 1e-12))


def c2st(a: np.ndarray, b: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Classifier two-sample test: mean ``folds``-fold accuracy of a gradient-boosted classifier
    separating feature rows ``a (n, F)`` from ``b (n', F)`` (0.5 = indistinguishable)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_limits

    folds = min(int(folds), len(a), len(b))
    if folds < 2:
        return float("nan")
    x = np.nan_to_num(np.concatenate([a, b]).astype(np.float64), nan=1e6, posinf=1e6, neginf=-1e6)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    # 64 bins and early stopping (on 10% of each training fold, where that holds at least 20 samples)
    # keep a 400-vs-400 test at a few seconds; one OpenMP thread, because the boosting's per-iteration
    # thread barriers stall badly when the cores are shared (training threads, parallel sweep jobs)
    clf = HistGradientBoostingClassifier(max_bins=64, early_stopping=len(x) >= 250, random_state=seed)
    with threadpool_limits(1, user_api="openmp"):
        return float(cross_val_score(clf, x, y, cv=cv, scoring="accuracy").mean())


C2ST_EIGENVALUES = 16   # largest eigenvalues among the c2st features


def side_stats(csm: np.ndarray, *, max_sources: int, beamformer: MapBeamformer | None = None) -> dict[str, Any]:
    """Per-set statistics the comparisons need (computed once per set and reused)."""
    csm = np.asarray(csm, np.complex128)
    finite = np.isfinite(csm).all(axis=(-2, -1))
    # non-finite samples (a diverged generator) count as invalid and are zeroed for the rest
    csm = np.where(finite[:, None, None], csm, 0.0)
    herm, w = _hermitian_eigs(csm, 1e-6)
    db = _db_from(w)
    st: dict[str, Any] = {"psd_rate": _psd_from(herm & finite, w, 1e-6), "db": db,
                          "count": source_count(db, max_sources)}
    top = 10 * np.log10(np.maximum(w[:, :C2ST_EIGENVALUES], 1e-12))
    feats = [top]
    if beamformer is not None:
        mp = beamformer.maps(csm)
        st["peak_xy"], st["peak_db"] = beamformer.peaks_of(mp)
        feats.append(map_db(mp))
    st["features"] = np.concatenate(feats, axis=1)
    return st


def compare(gen: dict[str, Any], real: dict[str, Any], *, max_sources: int, aperture: float | None,
            seed: int = 0) -> dict[str, float]:
    """Comparison metrics of two sets' ``side_stats`` (the module docstring's list)."""
    out = {"c2st": c2st(real["features"], gen["features"], seed=seed),
           "spectrum_db": spectrum_db(gen["db"], real["db"]),
           "source_count_dist": tv_distance(gen["count"], real["count"], max_sources)}
    if "peak_xy" in gen and "peak_xy" in real:
        k = min(len(gen["peak_xy"]), len(real["peak_xy"]))
        scale = float(aperture) if aperture else 1.0
        out["peak_w1"] = wasserstein_2d(gen["peak_xy"][:k], real["peak_xy"][:k]) / scale
        out["peak_level_dist"] = wasserstein_1d(gen["peak_db"][:k], real["peak_db"][:k])
    return out


def csm_metrics(gen_csm: np.ndarray, real_csm: np.ndarray, *, max_sources: int,
                gen_vectors: np.ndarray | None = None, beamformer: MapBeamformer | None = None,
                aperture: float | None = None, floor_csm: np.ndarray | None = None,
                real_cache: dict[str, Any] | None = None, seed: int = 0) -> dict[str, float]:
    """All metrics for generated vs real CSMs (see module docstring).

    ``gen_vectors``: generated eigenvectors for ``orthonormality_error`` (omitted when None).
    ``beamformer``: enables the map metrics (``peak_w1`` in apertures of ``aperture``).
    ``floor_csm``: a second real set, disjoint from ``real_csm``, for the ``*_floor`` values.
    ``real_cache``: a dict reused across calls to keep the real side's statistics and the floors.
    """
    cache = real_cache if real_cache is not None else {}
    kw = dict(max_sources=max_sources, beamformer=beamformer)
    if "real" not in cache:
        cache["real"] = side_stats(real_csm, **kw)
        if floor_csm is not None and len(floor_csm):
            floor = compare(side_stats(floor_csm, **kw), cache["real"], max_sources=max_sources,
                            aperture=aperture, seed=seed)
            cache["floor"] = {f"{k}_floor": v for k, v in floor.items()}
    gen = side_stats(gen_csm, **kw)
    out: dict[str, float] = {"psd_rate": gen["psd_rate"]}
    out.update(compare(gen, cache["real"], max_sources=max_sources, aperture=aperture, seed=seed))
    if gen_vectors is not None:
        out["orthonormality_error"] = orthonormality_error(np.nan_to_num(gen_vectors))
    out.update(cache.get("floor", {}))
    return out


def csm_evaluator(data, num_samples: int, seed: int) -> Evaluator:
    """Scores generated model-space samples against real ones (gan_cli.metrics.csm).

    ``n = min(num_samples, dataset.eval_samples)`` samples per side; a second, disjoint real set
    of the same size gives the ``*_floor`` values (both halves of the data when it has fewer
    than ``2 n`` samples). The beamformer and the real side's statistics are computed at the
    first call, so that training's first step does not wait for them.

    Several frequency lines (``num_classes > 0``): the samples are split by their labels and
    scored per line against that line's real samples, at its frequency; every metric is
    reported per line as ``NAME@<Hz>Hz`` (e.g. ``spectrum_db@1071.875Hz``) and as the mean over
    the lines under its usual name."""
    data.prepare()
    if data.num_classes:
        return _per_line_evaluator(data, num_samples, seed)
    return _line_evaluator(data, num_samples, seed)

def _per_line_evaluator(data, num_samples: int, seed: int) -> Evaluator:
    lines = range(data.num_classes)
    per_line = [_line_evaluator(data, max(2, int(num_samples) // len(lines)), seed, k) for k in lines]

    def evaluate(x: np.ndarray, labels: np.ndarray | None = None) -> dict:
        if labels is None:
            raise DataError("a multi-line CSM model is scored per frequency line and needs the samples' labels")
        labels = np.asarray(labels)
        out: dict[str, float] = {}
        scores = []
        for k in lines:
            rows = labels == k
            if rows.sum() < 2:   # too few samples of this line to score it
                continue
            m = per_line[k](np.asarray(x)[rows], labels[rows])
            scores.append(m)
            out.update({f"{name}@{fmt_hz(data.line_frequencies[k])}Hz": v for name, v in m.items()})
        names = [name for name in scores[0]] if scores else []
        return {**{name: float(np.mean([m[name] for m in scores if name in m])) for name in names}, **out}

    return evaluate

def _line_evaluator(data, num_samples: int, seed: int, label: int | None = None) -> Evaluator:
    """The evaluator of one line: all samples (``label`` None) or the real samples of ``label``."""
    pool = data.num_samples if label is None else int((data.arrays()[1] == label).sum())
    frequency = data.frequency if label is None else data.line_frequencies[label]
    n = max(2, min(int(num_samples), data.eval_samples, max(pool // 2, 2)))
    real_x, _ = data.real_samples(2 * n, seed) if data.streaming else data.disjoint_rows(2 * n, seed, label)
    real_csm = data.decode(real_x.astype(np.float64), None if label is None else np.full(len(real_x), label))
    real_csm, floor_csm = real_csm[:n], real_csm[n:2 * n]
    cache: dict[str, Any] = {}
    beamformer: list = []  # built at the first call
    max_src = data.params.max_sources
    beamform = data.mic_positions is not None and frequency

    def evaluate(x: np.ndarray, labels: np.ndarray | None = None) -> dict:
        if beamform and not beamformer:
            ap = data.aperture
            beamformer.append(MapBeamformer(data.mic_positions, frequency, data.reference_mic,
                                            extent=0.5 * ap, z=0.5 * ap, c=data.c, grid_points=data.eval_grid))
        bf = beamformer[0] if beamformer else None
        x = np.asarray(x[:n], np.float64)
        k = len(x)   # a line may get fewer generated samples than real ones: score as many of each
        gen_csm = data.decode(x, None if label is None else np.full(k, label))
        vec = None if data.representation == "csm" else x[..., 0] + 1j * x[..., 1]
        return csm_metrics(gen_csm, real_csm[:k], max_sources=max_src, gen_vectors=vec, beamformer=bf,
                           aperture=data.aperture, floor_csm=floor_csm[:k], real_cache=cache if k == n else {},
                           seed=seed)

    return evaluate
