"""Image metrics in the feature space of a small classifier trained on the dataset itself.

Inception weights cannot be downloaded offline, so each image dataset gets its own
small Keras CNN, trained once on the training split and cached under
``data_cache_dir()/classifiers/<name>_<hash>.keras``. Its penultimate layer
(``features``, 128 ReLU units) is the feature space for FCD, precision/recall and
density/coverage; its softmax gives the class-based metrics.

Unlabelled data (or a single class) trains the same network on a self-supervised
pretext task instead (which of 4 flips/rotations was applied: identity, horizontal
flip, vertical flip, 180-degree rotation); then only the feature metrics are reported.

The classifier's seed is fixed (``CLASSIFIER_SEED``), not the run's seed, so the
feature space, and therefore FCD, is the same for every run on the same data.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gan_cli.data.base import PREFETCH, data_cache_dir, fixed_pipeline
from gan_cli.metrics.feature_metrics import (class_histogram_metrics, classifier_score, density_coverage,
                                             frechet_distance, knn_radii, mean_cov, parzen_select,
                                             precision_recall)

# metrics where larger is better (the others here: smaller is better)
HIGHER_IS_BETTER = frozenset({"classifier_score", "precision", "recall", "density", "coverage", "classes_covered",
                              "label_accuracy", "parzen_ll"})

if TYPE_CHECKING:
    import keras

    from gan_cli.data.images import ImageDataset

CLASSIFIER_SEED = 1234
ARCH_VERSION = "cnn-v1"  # bump when the classifier architecture or training changes (invalidates caches)
PRETEXT_CLASSES = 4
NOISE_STD = 0.3  # std of the Gaussian noise added to real images (model space [-1, 1]) for fcd_noise
PR_K, DC_K = 3, 5  # k of Kynkaanniemi 2019 precision/recall and Naeem 2020 density/coverage


# --------------------------------------------------------------------------- classifier
def build_classifier(shape: tuple[int, int, int], num_classes: int, seed: int = CLASSIFIER_SEED) -> "keras.Model":
    """CNN ``(B, H, W, C)`` in [-1, 1] -> logits ``(B, num_classes)``; penultimate layer named ``features``.

    Conv 3x3 (32) then stride-2 conv 3x3 blocks (64, 128, 128 ...) until the map is <= 7 pixels,
    Flatten, Dense 128 ReLU (``features``), Dropout 0.3, Dense num_classes.
    """
    import keras

    init = lambda i: keras.initializers.GlorotUniform(seed=seed + i)  # noqa: E731
    inp = keras.Input(shape=shape, name="image")
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init(0))(inp)
    size, ch, i = min(shape[0], shape[1]), 64, 1
    while size > 7:
        h = keras.layers.Conv2D(ch, 3, strides=2, padding="same", activation="relu", kernel_initializer=init(i))(h)
        size, ch, i = (size + 1) // 2, min(ch * 2, 128), i + 1
    if i == 1:  # tiny images: still one more conv layer
        h = keras.layers.Conv2D(ch, 3, padding="same", activation="relu", kernel_initializer=init(i))(h)
    h = keras.layers.Flatten()(h)
    feat = keras.layers.Dense(128, activation="relu", name="features", kernel_initializer=init(20))(h)
    h = keras.layers.Dropout(0.3, seed=seed)(feat)
    out = keras.layers.Dense(num_classes, name="logits", kernel_initializer=init(21))(h)
    return keras.Model(inp, out, name="metric_classifier")


def pretext_batch(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Self-supervised labels: each image ``(N, H, W, C)`` once under each of 4 shape-preserving transforms."""
    del seed
    views = [x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]  # identity, h-flip, v-flip, rot180
    return np.concatenate(views), np.repeat(np.arange(PRETEXT_CLASSES, dtype=np.int32), x.shape[0])


def _cache_path(data: "ImageDataset", num_classes: int, pretext: bool) -> Path:
    key = json.dumps(dict(params=data.params, shape=list(data.sample_shape), classes=num_classes,
                          pretext=pretext, seed=CLASSIFIER_SEED, arch=ARCH_VERSION,
                          pixel_range=list(data.pixel_range)), sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return data_cache_dir() / "classifiers" / f"{data.name}_{digest}.keras"


def _train_classifier(data: "ImageDataset", num_classes: int, pretext: bool) -> tuple["keras.Model", float]:
    """Train on the training split; returns the model and its held-out accuracy."""
    import keras
    import tensorflow as tf

    x, y = data.arrays()
    xh, yh = data.holdout()
    if pretext:
        x, y = pretext_batch(x, CLASSIFIER_SEED)
        xh, yh = pretext_batch(xh, CLASSIFIER_SEED + 1)
    model = build_classifier(data.sample_shape, num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    # About 40k image presentations (>= 2 epochs): ~5 s for digits, ~1 min for MNIST on 2 CPU cores.
    epochs = int(np.clip(np.ceil(40_000 / x.shape[0]), 2, 60))
    ds = fixed_pipeline(tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
                        .shuffle(x.shape[0], seed=CLASSIFIER_SEED, reshuffle_each_iteration=True).batch(64)
                        .prefetch(PREFETCH))
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False)  # ds is shuffled (seeded) already
    acc = float(np.mean(_predict(model, xh).argmax(1) == yh)) if len(xh) else float("nan")
    return model, acc


def _predict(model: "keras.Model", x: np.ndarray, batch: int = 1024) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + batch], training=False)) for i in range(0, len(x), batch)])


def get_classifier(data: "ImageDataset", verbose: bool = True) -> tuple["keras.Model", bool, Path]:
    """The cached metric classifier for ``data`` (trained now if missing), whether it is a pretext model, its file."""
    import keras

    pretext = data.num_classes < 2
    num_classes = PRETEXT_CLASSES if pretext else data.num_classes
    from gan_cli.data.cache import build_once
    from gan_cli.core.errors import DataError

    path = _cache_path(data, num_classes, pretext)
    trained: dict[str, float] = {}

    def build(tmp: Path) -> None:
        t0 = time.time()
        model, trained["acc"] = _train_classifier(data, num_classes, pretext)
        model.save(tmp)
        trained["seconds"] = time.time() - t0

    def load(file: Path) -> "keras.Model":
        # a .keras file is a zip archive: a truncated file has no central directory, a changed byte
        # fails its member's CRC-32; both make the load fail
        try:
            return keras.models.load_model(file, compile=False)
        except Exception as exc:  # noqa: BLE001 - any failure means: rebuild
            raise DataError(f"unreadable: {type(exc).__name__}") from None

    path.parent.mkdir(parents=True, exist_ok=True)
    # trained once per data set and architecture, even by many processes at once
    model = build_once(path, build, load, what="metric classifier cache")
    if trained and verbose:
        task = "flip/rotation pretext" if pretext else "class"
        print(f"metric classifier for '{data.name}' ({task}, {num_classes} classes) trained in {trained['seconds']:.1f} s: "
              f"held-out accuracy {trained['acc']:.3f}; cached at {path}")
    return model, pretext, path


# --------------------------------------------------------------------------- evaluator
class ImageEvaluator:
    """Scores generated images against ``num_samples`` real training images.

    Call with ``x`` ``(n, H, W, C)`` float32 in [-1, 1] (model space) and ``labels``
    ``(n,)`` int (the requested classes of a conditional run) or None; returns a
    flat ``dict[str, float]`` (docs/images.md, "Image metrics", explains every key). Calibration
    values (``fcd_floor``, ``fcd_noise``, ``classifier_score_real``) are computed once
    here and repeated in every result.
    """

    def __init__(self, data: "ImageDataset", num_samples: int, seed: int, parzen: bool | None = None) -> None:
        import keras

        self.data = data
        self.parzen = bool(getattr(data, "parzen", False) if parzen is None else parzen)
        clf, self.pretext, self.cache_path = get_classifier(data)
        self.num_classes = PRETEXT_CLASSES if self.pretext else data.num_classes
        self._model = keras.Model(clf.input, [clf.get_layer("features").output, clf.output])
        rng = np.random.default_rng(seed)

        # Reference: num_samples real training images (all of them, without duplicates, when the
        # training split is smaller: duplicates would give zero k-NN radii) and their feature statistics.
        x_train, _ = data.arrays()
        n_ref = min(int(num_samples), x_train.shape[0])
        if n_ref <= max(PR_K, DC_K):
            from gan_cli.core.errors import ConfigError

            raise ConfigError(f"only {n_ref} reference images (metrics.num_samples={num_samples}, {x_train.shape[0]} "
                              f"training images); the k-NN metrics need more than {max(PR_K, DC_K)}: raise "
                              "metrics.num_samples (and dataset.limit)")
        x_ref = x_train[np.sort(rng.choice(x_train.shape[0], size=n_ref, replace=False))]
        self.num_reference = n_ref
        self.f_ref, _ = self.features(x_ref)
        self.mu_ref, self.cov_ref = mean_cov(self.f_ref)
        self.r_pr = knn_radii(self.f_ref, PR_K)
        self.r_dc = knn_radii(self.f_ref, DC_K)

        # Calibration on held-out real images (at most num_samples of them).
        xh, _ = data.holdout()
        m = min(int(num_samples), xh.shape[0])
        xh = xh[rng.choice(xh.shape[0], size=m, replace=False)]
        f_h, logits_h = self.features(xh)
        noisy = np.clip(xh + rng.normal(0.0, NOISE_STD, size=xh.shape).astype(np.float32), -1.0, 1.0)
        f_noisy, _ = self.features(noisy)
        self.calibration = {
            "fcd_floor": frechet_distance(*mean_cov(f_h), self.mu_ref, self.cov_ref),
            "fcd_noise": frechet_distance(*mean_cov(f_noisy), self.mu_ref, self.cov_ref),
            # FD is biased upwards at small sample sizes: the floor is exact for n == fcd_floor_n
            # generated samples and conservative (too high) when fewer held-out images exist than num_samples.
            "fcd_floor_n": float(m),
        }
        if not self.pretext:
            self.calibration["classifier_score_real"] = classifier_score(_softmax(logits_h))

        if self.parzen:
            # Parzen data on the 2014 paper's [0, 1] pixel scale: half of the holdout validates sigma, half tests.
            xh_all, _ = data.holdout()
            flat = (xh_all.reshape(xh_all.shape[0], -1) + 1.0) * 0.5
            perm = rng.permutation(flat.shape[0])
            half = max(1, flat.shape[0] // 2)
            self.parzen_valid, self.parzen_test = flat[perm[:half]], flat[perm[half:]]

    def features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(n, H, W, C)`` in [-1, 1] -> (features ``(n, 128)`` float64, logits ``(n, K)``)."""
        x = np.asarray(x, dtype=np.float32)
        feats, logits = [], []
        for i in range(0, x.shape[0], 1024):
            f, lg = self._model(x[i:i + 1024], training=False)
            feats.append(np.asarray(f, dtype=np.float64))
            logits.append(np.asarray(lg, dtype=np.float64))
        return np.concatenate(feats), np.concatenate(logits)

    def __call__(self, x: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.data.sample_shape):
            raise ValueError(f"expected generated images (n, {', '.join(map(str, self.data.sample_shape))}), got {x.shape}")
        out: dict[str, float] = {}
        keys = ["fcd", "precision", "recall", "density", "coverage"]
        if not self.pretext:
            keys += ["classifier_score", "classes_covered", "class_kl"]
            if labels is not None:
                keys.append("label_accuracy")
        if self.parzen:
            keys += ["parzen_ll", "parzen_ll_se", "parzen_sigma"]
        if not np.all(np.isfinite(x)) or x.shape[0] <= DC_K:
            out.update({k: float("nan") for k in keys})  # diverged generator or too few samples
            out.update(self.calibration)
            return out

        f, logits = self.features(x)
        out["fcd"] = frechet_distance(*mean_cov(f), self.mu_ref, self.cov_ref)
        out["precision"], out["recall"] = precision_recall(self.f_ref, f, PR_K, self.r_pr)
        out["density"], out["coverage"] = density_coverage(self.f_ref, f, DC_K, self.r_dc)
        if not self.pretext:
            pred = logits.argmax(1)
            out["classifier_score"] = classifier_score(_softmax(logits))
            covered, kl = class_histogram_metrics(pred, self.num_classes)
            out["classes_covered"], out["class_kl"] = float(covered), kl
            if labels is not None:
                labels = np.asarray(labels).reshape(-1)
                if labels.shape[0] != x.shape[0]:
                    raise ValueError(f"got {labels.shape[0]} labels for {x.shape[0]} images")
                out["label_accuracy"] = float(np.mean(pred == labels))
        if self.parzen:
            gen = (x.reshape(x.shape[0], -1).astype(np.float64) + 1.0) * 0.5
            out["parzen_ll"], out["parzen_ll_se"], out["parzen_sigma"] = parzen_select(
                gen, self.parzen_valid, self.parzen_test)
        out.update(self.calibration)
        return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
