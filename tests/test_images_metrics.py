"""Image metrics: closed-form and hand-checked feature metrics, and the digits evaluator's ordering."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.linalg

from gan_cli.metrics import evaluator_for
from gan_cli.metrics.feature_metrics import (class_histogram_metrics, classifier_score, density_coverage,
                                             frechet_distance, frechet_from_features, knn_radii,
                                             parzen_log_likelihood, parzen_select, precision_recall)


# --------------------------------------------------------------------------- Frechet distance
def test_frechet_closed_form_diagonal():
    # For diagonal covariances FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1.0 + 0.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-10)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-10)


def test_frechet_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)


def test_frechet_from_samples_approaches_closed_form():
    rng = np.random.default_rng(1)
    f1 = rng.normal(0.0, 1.0, (20000, 2))
    f2 = rng.normal([3.0, 0.0], [2.0, 1.0], (20000, 2))
    assert frechet_from_features(f1, f2) == pytest.approx(9.0 + 1.0, abs=0.15)


# --------------------------------------------------------------------------- k-NN metrics
REAL = np.array([[0.0], [1.0], [2.0], [3.0]])


def test_knn_radii_excludes_self():
    assert knn_radii(REAL, 1).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert knn_radii(REAL, 2).tolist() == [2.0, 1.0, 1.0, 2.0]


def test_precision_recall_hand_checked():
    # k=1: every real ball has radius 1. Fake 0.5 lies in the balls of 0 and 1, fake 10 in none -> precision 1/2.
    # The two fakes are 9.5 apart, so each fake ball (radius 9.5) holds all real points -> recall 1.
    assert precision_recall(REAL, np.array([[0.5], [10.0]]), k=1) == (0.5, 1.0)
    # Closed balls: a fake exactly on the boundary (4 = 3 + 1) counts for precision.
    p, _ = precision_recall(REAL, np.array([[4.0], [20.0]]), k=1)
    assert p == 0.5
    # Fakes far from each other and from the real set: nothing recalled.
    assert precision_recall(REAL, np.array([[100.0], [100.5], [300.0]]), k=1) == (0.0, 0.0)


def test_density_coverage_hand_checked():
    # Fake 0.5 is inside 2 real balls (of 0 and 1), fake 10 inside none: density = (2 + 0) / (k=1 * 2 fakes) = 1.
    # Real 0 and 1 have a fake within their radius 1, real 2 and 3 do not: coverage = 2/4.
    assert density_coverage(REAL, np.array([[0.5], [10.0]]), k=1) == (1.0, 0.5)
    # Open balls: a fake exactly on a boundary (4 = 3 + 1) is not inside.
    assert density_coverage(REAL, np.array([[4.0], [10.0]]), k=1) == (0.0, 0.0)
    # Four fakes piled at 0.5, each inside the balls of 0 and 1: density = 4 * 2 / (1 * 4) = 2 (exceeds 1),
    # while coverage stays 2/4.
    assert density_coverage(REAL, np.full((4, 1), 0.5), k=1) == (2.0, 0.5)


def test_class_histogram_metrics():
    assert class_histogram_metrics(np.array([0, 0, 1, 1]), 2) == (2, 0.0)
    covered, kl = class_histogram_metrics(np.zeros(40, int), 4)
    assert covered == 1 and kl == pytest.approx(np.log(4))
    # 1000 predictions, 10 classes: a class needs >= 10 (a tenth of its fair share of 100) to count.
    pred = np.concatenate([np.repeat(np.arange(9), 110), np.full(9, 9)])[:1000]
    assert class_histogram_metrics(pred, 10)[0] == 9


def test_classifier_score_bounds():
    assert classifier_score(np.eye(10)) == pytest.approx(10.0, rel=1e-6)        # confident and diverse
    assert classifier_score(np.tile(np.eye(10)[3], (50, 1))) == pytest.approx(1.0)  # one class only
    assert classifier_score(np.full((50, 10), 0.1)) == pytest.approx(1.0)       # unsure everywhere


def test_parzen_window():
    # One kernel at the origin, sigma 1, 1-D: log N(0; 0, 1) = -log(2 pi) / 2.
    assert parzen_log_likelihood(np.zeros((1, 1)), np.zeros((1, 1)), 1.0)[0] == pytest.approx(-0.5 * np.log(2 * np.pi))
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 0.3, (500, 2))
    ll, se, sigma = parzen_select(samples, rng.normal(0, 0.3, (200, 2)), rng.normal(0, 0.3, (200, 2)))
    ll_far, _, _ = parzen_select(samples + 5.0, rng.normal(0, 0.3, (200, 2)), rng.normal(0, 0.3, (200, 2)))
    assert 0.03 < sigma < 0.5 and se > 0 and ll > ll_far


# --------------------------------------------------------------------------- digits evaluator
@pytest.fixture(scope="module")
def digits_eval(tmp_path_factory):
    """Digits dataset and an evaluator whose classifier is trained into a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAN_CLI_DATA", str(tmp_path_factory.mktemp("gan_cli_data")))
        from gan_cli.data.images import DigitsDataset

        data = DigitsDataset()
        evaluator = evaluator_for(data, 1000, 0)
        yield data, evaluator


def test_evaluator_orders_real_above_noise(digits_eval):
    data, evaluator = digits_eval
    xh, yh = data.holdout()
    real = evaluator(xh, yh)
    noise = evaluator(np.random.default_rng(0).uniform(-1, 1, (1000, 8, 8, 1)).astype(np.float32), None)
    blank = evaluator(np.full((500, 8, 8, 1), -1.0, np.float32), None)
    assert real["fcd"] < 0.2 * noise["fcd"] and real["fcd"] < real["fcd_noise"]
    assert real["fcd"] == pytest.approx(real["fcd_floor"], rel=1e-6)  # floor = this very comparison
    assert real["fcd_floor"] < real["fcd_noise"] < noise["fcd"]
    assert real["precision"] > 0.8 > noise["precision"] and real["coverage"] > 0.6 > noise["coverage"]
    assert real["recall"] > noise["recall"] and real["density"] > noise["density"]
    assert real["classes_covered"] == 10 and real["class_kl"] < 0.05
    assert real["classifier_score"] > 8.0 > noise["classifier_score"]
    # mode collapse onto one blank image: one class, maximal class_kl, no coverage
    assert blank["classes_covered"] == 1 and blank["class_kl"] == pytest.approx(np.log(10))
    assert blank["coverage"] < 0.05 and "label_accuracy" not in noise
    for result in (real, noise, blank):
        assert {"fcd_floor", "fcd_noise", "fcd_floor_n", "classifier_score_real"} <= set(result)


def test_evaluator_label_accuracy(digits_eval):
    data, evaluator = digits_eval
    xh, yh = data.holdout()
    shuffled = np.random.default_rng(0).permutation(yh)
    assert evaluator(xh, yh)["label_accuracy"] > 0.9
    assert evaluator(xh, shuffled)["label_accuracy"] < 0.25


def test_evaluator_speed_and_nan_input(digits_eval):
    data, evaluator = digits_eval
    x, y = data.real_samples(1000, seed=1)
    t0 = time.perf_counter()
    evaluator(x, y)
    assert time.perf_counter() - t0 < 5.0  # ~0.1 s on 2 idle CPU cores; generous for shared machines
    bad = evaluator(np.full((20, 8, 8, 1), np.nan, np.float32), None)
    assert np.isnan(bad["fcd"]) and np.isfinite(bad["fcd_floor"])
    with pytest.raises(ValueError, match="expected generated images"):
        evaluator(np.zeros((10, 8, 8), np.float32), None)


def test_classifier_is_cached(digits_eval, monkeypatch):
    import gan_cli.metrics.images as mi

    data, evaluator = digits_eval
    path = evaluator.cache_path
    assert path.exists() and path.name.startswith("digits_") and path.parent.name == "classifiers"
    # A second evaluator on the same cache must load the file, not retrain.
    monkeypatch.setenv("GAN_CLI_DATA", str(path.parent.parent))

    def no_training(*args, **kwargs):
        raise AssertionError("classifier retrained despite the cache")

    monkeypatch.setattr(mi, "_train_classifier", no_training)
    again = evaluator_for(data, 300, 1)
    assert again.cache_path == path
    xh, yh = data.holdout()
    assert again(xh[:300], yh[:300])["label_accuracy"] > 0.9
    # Different data parameters -> a different cache entry.
    assert mi._cache_path(type(data)(image_size=16), 10, False) != path
