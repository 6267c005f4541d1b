"""Readers for image files: MNIST ``.npz`` / IDX, image folders, HDF5, and resizing.

Every reader returns images as numpy arrays of shape ``(N, H, W, C)`` in their
original pixel range (uint8 0..255 for files, float for HDF5) and labels as
``(N,)`` int32 or ``None``. Problems with a file raise :class:`DataError` with a
one-line message naming the file, the problem and the fix.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from gan_cli.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

# IDX file names of the MNIST family (Fashion-MNIST uses the same names).
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def as_nhwc(x: np.ndarray, source: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)`` -> ``(N, H, W, C)``; DataError for other ranks."""
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and 1 <= x.shape[-1] <= 4:
        return x
    raise DataError(f"{source}: images have shape {tuple(x.shape)}; expected (N, H, W) or (N, H, W, C) with C <= 4")


def check_labels(y: np.ndarray | None, n: int, source: str) -> np.ndarray | None:
    """Validate labels: shape ``(n,)`` (or ``(n, 1)``), non-negative integers -> int32."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise DataError(f"{source}: labels have shape {tuple(y.shape)}; expected ({n},), one integer label per image")
    if y.size and (not np.all(np.isfinite(y)) or np.any(y < 0) or np.any(y != np.round(y))):
        raise DataError(f"{source}: labels must be non-negative integers 0..K-1")
    return y.astype(np.int32)


def resize_images(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of ``(N, H, W, C)`` to ``(N, *size, C)``, float32, same value range."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x.astype(np.float32)
    import tensorflow as tf

    out = [tf.image.resize(x[i:i + 4096].astype(np.float32), size, method="bilinear", antialias=True).numpy()
           for i in range(0, x.shape[0], 4096)]
    lo, hi = float(x.min()), float(x.max())
    return np.clip(np.concatenate(out, axis=0), lo, hi)  # bilinear stays in range; clip float error


# --------------------------------------------------------------------------- MNIST
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 08 NDIM, NDIM big-endian uint32 dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
            raise ValueError("bad magic number")
        dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(dims)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(f"{path}: not a readable IDX file ({exc}); re-download it or point dataset.path at a good copy") from None


def read_mnist_path(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``mnist.npz`` (keys x_train, y_train, x_test, y_test) or a folder of the four IDX files."""
    path = Path(path).expanduser()
    if path.is_dir():
        npzs = sorted(path.glob("*.npz"))
        if not any((path / name).exists() or (path / (name + ".gz")).exists() for name in IDX_FILES.values()) and npzs:
            return read_mnist_path(npzs[0])
        arrays = {}
        for key, name in IDX_FILES.items():
            for candidate in (path / name, path / (name + ".gz")):
                if candidate.exists():
                    arrays[key] = read_idx(candidate)
                    break
            else:
                raise DataError(f"{path}: missing {name}[.gz]; put the four MNIST IDX files (or mnist.npz) in this folder")
        return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
    if not path.exists():
        raise DataError(f"{path}: no such file; set dataset.path to an mnist.npz file or a folder with the IDX files")
    try:
        with np.load(path) as f:
            missing = [k for k in IDX_FILES if k not in f.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)}; expected keys x_train, y_train, x_test, y_test")
            return f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    except DataError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, pickle errors ...
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}); re-download it or fix dataset.path") from None


# --------------------------------------------------------------------------- folders
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(path: Path, size: tuple[int, int], channels: int) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Images in ``path`` (unlabelled) or in one subfolder per class (labelled, classes sorted by name).

    Returns uint8 images ``(N, *size, channels)`` resized bilinearly, labels and class names.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; set dataset.path to a folder of .png/.jpg images (optionally one subfolder per class)")
    if channels not in (1, 3):
        raise DataError(f"dataset.channels={channels}; use 1 (grayscale) or 3 (RGB)")
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and _image_files(d))
    top = _image_files(path)
    if subdirs and top:
        raise DataError(f"{path}: has both images and class subfolders; move the {len(top)} top-level images into a class subfolder or remove them")
    groups = [(d.name, _image_files(d)) for d in subdirs] if subdirs else [("", top)]
    if not any(files for _, files in groups):
        raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) found; put images in the folder or in one subfolder per class")
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for label, (_, files) in enumerate(groups):
        for file in files:
            try:
                with Image.open(file) as im:
                    im = im.convert(mode)
                    if im.size != (size[1], size[0]):
                        im = im.resize((size[1], size[0]), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"{file}: cannot decode image ({type(exc).__name__}); delete or replace the file") from None
            images.append(arr.reshape(size[0], size[1], channels))
            labels.append(label)
    x = np.stack(images)
    y = np.asarray(labels, dtype=np.int32) if subdirs else None
    return x, y, [name for name, _ in groups] if subdirs else []


# --------------------------------------------------------------------------- HDF5
def read_h5(path: Path, images_key: str, labels_key: str | None,
            labels_key_is_default: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Images ``(N, H, W[, C])`` under ``images_key`` and optional labels ``(N,)`` under ``labels_key``.

    A missing *default* labels key means "unlabelled"; a missing key the user named is an error.
    """
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file; set dataset.path to an HDF5 file with an '{images_key}' array")
    try:
        with h5py.File(path, "r") as f:
            if images_key not in f or not isinstance(f[images_key], h5py.Dataset):
                keys = ", ".join(sorted(f.keys())) or "none"
                raise DataError(f"{path}: no dataset '{images_key}' (found: {keys}); set dataset.images_key")
            x = f[images_key][()]
            y = None
            if labels_key:
                if labels_key in f:
                    y = f[labels_key][()]
                elif not labels_key_is_default:
                    raise DataError(f"{path}: no dataset '{labels_key}'; set dataset.labels_key (or null for unlabelled data)")
    except DataError:
        raise
    except Exception as exc:  # OSError for truncated/corrupt files
        raise DataError(f"{path}: not a readable HDF5 file ({type(exc).__name__}); check the file or fix dataset.path") from None
    x = as_nhwc(np.asarray(x), str(path))
    if not np.issubdtype(x.dtype, np.number) or x.shape[0] == 0:
        raise DataError(f"{path}: '{images_key}' must be a non-empty numeric array")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: '{images_key}' contains NaN or inf values; clean the data")
    return x, check_labels(y, x.shape[0], str(path))
