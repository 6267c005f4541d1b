"""Image datasets: scikit-learn digits, MNIST / Fashion-MNIST, a folder of images, an HDF5 file.

Model space: float32 ``(N, H, W, C)`` with pixels scaled linearly from the data's
``pixel_range = (lo, hi)`` to [-1, 1] (the DCGAN generator ends in ``tanh``).
User space (``to_user_space``, ``.npy`` output): float32 in the original range
``[lo, hi]`` (digits 0..16, MNIST/folders 0..255), shape ``(N, H, W)`` for one
channel, ``(N, H, W, C)`` otherwise.

Each dataset keeps a held-out split (MNIST: its official test set; others:
``holdout_fraction`` of the images chosen with ``split_seed``). ``arrays()`` returns
only the training split; the held-out split calibrates the metrics (see
``gan_cli.metrics.images``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gan_cli.data.base import GanDataset
from gan_cli.data.image_files import (as_nhwc, check_labels, read_h5, read_image_folder,
                                      read_mnist_path, resize_images)
from gan_cli.core.errors import ConfigError, DataError

SNAPSHOT_COLS = 10  # images per row of the samples/step_XXXXXXXX.png grids

def _size(image_size: Any, native: tuple[int, int]) -> tuple[int, int]:
    """``None`` -> native size; ``int`` -> square; ``[H, W]`` -> as given."""
    if image_size is None:
        return native
    if isinstance(image_size, int) or (isinstance(image_size, float) and float(image_size).is_integer()):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 4 or max(size) > 1024:
        raise ConfigError(f"dataset.image_size={image_size}; use an int (or [H, W]) between 4 and 1024")
    return size  # type: ignore[return-value]


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint (train, holdout) index arrays; the holdout has ``round(fraction * n)`` items."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"dataset.holdout_fraction={fraction}; use a value in (0, 1), e.g. 0.2")
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = max(1, int(round(fraction * n)))
    if n - n_hold < 2:
        raise DataError(f"only {n} images: too few to hold out {fraction:.0%} for metrics; add images or lower dataset.holdout_fraction")
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


class ImageDataset(GanDataset):
    """Images in memory, with a held-out split and a classifier-based evaluator.

    Args:
        name: config name (also names the cached metric classifier).
        x_train, x_holdout: ``(N, H, W, C)`` images in the original range ``pixel_range``.
        y_train, y_holdout: ``(N,)`` int labels in ``0..num_classes-1`` or ``None``.
        pixel_range: ``(lo, hi)`` of the original data, mapped to ``(-1, 1)``.
        params: the config values that define the data (hashed into the classifier cache key).
        limit: keep only the first ``limit`` training images (quick experiments).
    """

    kind = "image"
    default_model = "dcgan"
    default_latent_dim = 64
    primary_metric = "fcd"  # Frechet classifier distance, lower is better

    def __init__(self, name: str, x_train: np.ndarray, y_train: np.ndarray | None,
                 x_holdout: np.ndarray, y_holdout: np.ndarray | None,
                 pixel_range: tuple[float, float], params: dict[str, Any],
                 num_classes: int | None = None, class_names: list[str] | None = None,
                 limit: int | None = None, parzen: bool = False) -> None:
        lo, hi = float(pixel_range[0]), float(pixel_range[1])
        if not hi > lo:
            raise ConfigError(f"dataset.pixel_range=[{lo}, {hi}]; the maximum must exceed the minimum")
        if limit is not None:
            if int(limit) < 2:
                raise ConfigError(f"dataset.limit={limit}; use null or an integer >= 2")
            x_train = x_train[: int(limit)]
            y_train = None if y_train is None else y_train[: int(limit)]
        self.name = name
        self.parzen = bool(parzen)  # add the Parzen-window log-likelihood to the metrics (slower)
        self.pixel_range = (lo, hi)
        self.params = dict(params)
        self.sample_shape = tuple(int(s) for s in x_train.shape[1:])
        self._x = self.to_model_space(x_train)
        self._y = None if y_train is None else y_train.astype(np.int32)
        self._xh = self.to_model_space(x_holdout)
        self._yh = None if (y_holdout is None or y_train is None) else y_holdout.astype(np.int32)
        if self._y is None:
            self.num_classes = 0
        else:
            seen = int(max(self._y.max(), -1 if self._yh is None else self._yh.max())) + 1
            self.num_classes = int(num_classes) if num_classes else seen
        self.class_names = class_names or [str(i) for i in range(self.num_classes)]

    # ------------------------------------------------------------------ spaces
    def to_model_space(self, x: np.ndarray) -> np.ndarray:
        """Original range ``[lo, hi]`` -> float32 in [-1, 1], shape unchanged ``(N, H, W, C)``."""
        lo, hi = self.pixel_range
        return (2.0 * (np.asarray(x, dtype=np.float32) - lo) / (hi - lo) - 1.0).astype(np.float32)

    def to_user_space(self, x: np.ndarray) -> np.ndarray:
        """Model space ``(N, H, W, C)`` in [-1, 1] -> float32 in ``[lo, hi]``; ``(N, H, W)`` when C == 1."""
        lo, hi = self.pixel_range
        x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
        out = ((x + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)
        return out[..., 0] if out.shape[-1] == 1 else out

    # ------------------------------------------------------------------ GanDataset
    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Training split: float32 ``(N, H, W, C)`` in [-1, 1] and labels ``(N,)`` int32 or None."""
        return self._x, self._y

    def holdout(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Held-out split (model space), never used for training the GAN."""
        return self._xh, self._yh

    def write_samples(self, x: np.ndarray, labels: np.ndarray | None, path: Path) -> None:
        """``.png``: an image grid (labels as titles when given); ``.npy``: ``to_user_space(x)``."""
        from gan_cli.data.image_grid import write_image_samples

        write_image_samples(self, x, labels, Path(path))

    def write_snapshot_image(self, x: np.ndarray, labels: np.ndarray | None, path: Path) -> None:
        """The PNG grid of one evaluation: ``path`` + ``.png`` (``path`` is ``samples/step_XXXXXXXX``).

        ``x`` is the fixed evaluation batch (model space, ``(n, H, W, C)``) and ``labels`` its classes
        (conditional runs) or None. Unconditional: the first 100 images, 10 per row. Conditional: one
        row per class (first ``SNAPSHOT_COLS`` images of that class in the batch). The newest grid is
        also copied to ``samples/final.png`` (after training: the final model's grid).
        """
        import shutil

        from gan_cli.data.image_grid import class_rows, write_png_grid

        path = Path(path)
        png = path.with_name(path.name + ".png")
        x = np.asarray(x, dtype=np.float32)
        if labels is not None and self.num_classes >= 2:
            cells = class_rows(x, np.asarray(labels), self.num_classes, SNAPSHOT_COLS)
            write_png_grid(cells, png, cols=SNAPSHOT_COLS, row_labels=list(self.class_names[:self.num_classes]))
        else:
            write_png_grid(x[:SNAPSHOT_COLS * SNAPSHOT_COLS], png, cols=SNAPSHOT_COLS)
        shutil.copyfile(png, png.with_name("final.png"))


# ---------------------------------------------------------------------- constructors
class DigitsDataset(ImageDataset):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, pixels 0..16); works offline."""

    def __init__(self, name: str = "digits", image_size: Any = 8, holdout_fraction: float = 0.2,
                 split_seed: int = 0, limit: int | None = None, parzen: bool = False) -> None:
        from sklearn.datasets import load_digits

        data = load_digits()
        size = _size(image_size, (8, 8))
        x = resize_images(data.images.astype(np.float32)[..., None], size)
        y = data.target.astype(np.int32)
        tr, ho = _split(x.shape[0], holdout_fraction, split_seed)
        params = dict(image_size=list(size), holdout_fraction=holdout_fraction, split_seed=split_seed, limit=limit)
        super().__init__(name, x[tr], y[tr], x[ho], y[ho], (0.0, 16.0), params, num_classes=10, limit=limit, parzen=parzen)


class MnistDataset(ImageDataset):
    """MNIST or Fashion-MNIST (28x28 grayscale, 60k train + 10k test, pixels 0..255).

    ``path=None`` uses the Keras loader (downloads once into ``~/.keras/datasets``);
    otherwise ``path`` is an ``mnist.npz`` file or a folder with the four IDX files.
    The official test set is the held-out split.
    """

    _loaders = {"mnist": "mnist", "fashion_mnist": "fashion_mnist"}

    def __init__(self, name: str = "mnist", variant: str = "mnist", path: str | None = None,
                 image_size: Any = 28, limit: int | None = None, parzen: bool = False) -> None:
        if variant not in self._loaders:
            raise ConfigError(f"dataset.variant={variant}; use mnist or fashion_mnist")
        if path:
            x_tr, y_tr, x_te, y_te = read_mnist_path(Path(path))
            source = str(path)
        else:
            x_tr, y_tr, x_te, y_te = self._keras_load(variant)
            source = f"keras.datasets.{variant}"
        x_tr, x_te = as_nhwc(np.asarray(x_tr), source), as_nhwc(np.asarray(x_te), source)
        y_tr, y_te = check_labels(y_tr, x_tr.shape[0], source), check_labels(y_te, x_te.shape[0], source)
        size = _size(image_size, tuple(x_tr.shape[1:3]))
        x_tr, x_te = resize_images(x_tr, size), resize_images(x_te, size)
        params = dict(variant=variant, image_size=list(size), limit=limit, n_train=int(x_tr.shape[0]))
        super().__init__(name, x_tr, y_tr, x_te, y_te, (0.0, 255.0), params, num_classes=10, limit=limit, parzen=parzen)

    @staticmethod
    def _keras_load(variant: str):
        import keras

        module = getattr(keras.datasets, variant)
        fname = "mnist.npz" if variant == "mnist" else "fashion-mnist/ (the 4 .gz IDX files)"
        try:
            (x_tr, y_tr), (x_te, y_te) = module.load_data()
        except Exception as exc:  # no internet: URLError, HTTPError, OSError, ...
            reason = " ".join(str(exc).split())[:120] or type(exc).__name__
            raise DataError(
                f"cannot load {variant} ({reason}; offline?): download it once to {_keras_datasets_dir()}/{fname} "
                f"or set dataset.path=/path/to/mnist.npz (or a folder with the IDX files)") from None
        return x_tr, y_tr, x_te, y_te


def _keras_datasets_dir() -> str:
    """Where ``keras.datasets`` looks for (and downloads) its files, with the home folder shown as ``~``."""
    import os

    # keras.utils.get_file's documented cache folder: $KERAS_HOME, else ~/.keras
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    if not os.access(home, os.W_OK):  # keras.utils.get_file's own fallback (also when the folder is missing)
        home = os.path.join("/tmp", ".keras")
    path = os.path.join(home, "datasets")
    user = os.path.expanduser("~")
    return "~" + path[len(user):] if user not in ("", "/") and path.startswith(user + os.sep) else path


class FolderDataset(ImageDataset):
    """A folder of .png/.jpg images, optionally one subfolder per class; resized to ``image_size``."""

    def __init__(self, name: str = "folder", path: str | None = None, image_size: Any = 32, channels: int = 1,
                 holdout_fraction: float = 0.1, split_seed: int = 0, limit: int | None = None,
                 parzen: bool = False) -> None:
        if not path:
            raise ConfigError("dataset.path is not set; use dataset=folder dataset.path=/path/to/images")
        size = _size(image_size, (32, 32))
        x, y, class_names = read_image_folder(Path(path), size, int(channels))
        tr, ho = _split(x.shape[0], holdout_fraction, split_seed)
        params = dict(path=str(Path(path).expanduser().resolve()), n=int(x.shape[0]), image_size=list(size),
                      channels=channels, holdout_fraction=holdout_fraction, split_seed=split_seed, limit=limit)
        super().__init__(name, x[tr], None if y is None else y[tr], x[ho], None if y is None else y[ho],
                         (0.0, 255.0), params, num_classes=len(class_names) or None,
                         class_names=class_names or None, limit=limit, parzen=parzen)


class H5Dataset(ImageDataset):
    """Images from an HDF5 file: ``images_key`` ``(N, H, W[, C])``, optional ``labels_key`` ``(N,)``.

    ``pixel_range=None`` takes ``(0, 255)`` for uint8 data and the data's (min, max) otherwise.
    """

    def __init__(self, name: str = "h5", path: str | None = None, images_key: str = "images",
                 labels_key: str | None = "labels", pixel_range: Any = None, image_size: Any = None,
                 holdout_fraction: float = 0.1, split_seed: int = 0, limit: int | None = None,
                 parzen: bool = False) -> None:
        if not path:
            raise ConfigError("dataset.path is not set; use dataset=h5 dataset.path=/path/to/file.h5")
        x, y = read_h5(Path(path), images_key, labels_key, labels_key_is_default=(labels_key == "labels"))
        if pixel_range is None:
            lo, hi = (0.0, 255.0) if x.dtype == np.uint8 else (float(x.min()), float(x.max()))
            if hi <= lo:
                raise DataError(f"{path}: all pixels equal {lo}; the images carry no information")
        else:
            lo, hi = (float(v) for v in pixel_range)
            if x.min() < lo or x.max() > hi:
                raise DataError(f"{path}: pixel values {float(x.min()):g}..{float(x.max()):g} fall outside "
                                f"dataset.pixel_range=[{lo:g}, {hi:g}]; widen it or set it to null")
        size = _size(image_size, tuple(x.shape[1:3]))
        x = resize_images(x, size)
        tr, ho = _split(x.shape[0], holdout_fraction, split_seed)
        params = dict(path=str(Path(path).expanduser().resolve()), images_key=images_key, labels_key=labels_key,
                      n=int(x.shape[0]), pixel_range=[lo, hi], image_size=list(size),
                      holdout_fraction=holdout_fraction, split_seed=split_seed, limit=limit)
        super().__init__(name, x[tr], None if y is None else y[tr], x[ho], None if y is None else y[ho],
                         (lo, hi), params, limit=limit, parzen=parzen)
