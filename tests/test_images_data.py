"""Image datasets: digits, MNIST files, folders, HDF5; errors; writing samples."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from gan_cli.data.images import DigitsDataset, FolderDataset, H5Dataset, MnistDataset
from gan_cli.core.errors import ConfigError, DataError, UserError

CONF = Path(__file__).resolve().parent.parent / "conf" / "dataset"


@pytest.fixture(scope="module")
def digits() -> DigitsDataset:
    return DigitsDataset()


# --------------------------------------------------------------------------- digits
def test_digits_shapes_ranges_labels(digits):
    x, y = digits.arrays()
    xh, yh = digits.holdout()
    assert digits.kind == "image" and digits.default_model == "dcgan" and digits.primary_metric == "fcd"
    assert x.shape == (1438, 8, 8, 1) and xh.shape == (359, 8, 8, 1) and x.dtype == np.float32
    assert digits.sample_shape == (8, 8, 1) and digits.num_classes == 10
    assert x.min() == -1.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10)) and y.dtype == np.int32 and yh.shape == (359,)
    assert digits.pixel_range == (0.0, 16.0)
    user = digits.to_user_space(x[:5])
    assert user.shape == (5, 8, 8) and user.min() >= 0.0 and user.max() <= 16.0
    # the linear map round-trips exactly enough (digits pixels are integers 0..16)
    from sklearn.datasets import load_digits

    assert set(np.unique(np.round(digits.to_user_space(x), 4))) <= set(map(float, range(17)))
    assert np.allclose(np.sort(np.concatenate([digits.to_user_space(x), digits.to_user_space(xh)]).sum((1, 2))),
                       np.sort(load_digits().images.sum((1, 2))), atol=1e-3)


def test_digits_resize_limit_and_split_seed():
    d = DigitsDataset(image_size=16, limit=100, split_seed=3)
    x, y = d.arrays()
    assert x.shape == (100, 16, 16, 1) and y.shape == (100,) and -1.0 <= x.min() and x.max() <= 1.0
    assert not np.array_equal(DigitsDataset(split_seed=3).holdout()[1], DigitsDataset(split_seed=0).holdout()[1])
    with pytest.raises(ConfigError, match="holdout_fraction"):
        DigitsDataset(holdout_fraction=1.5)
    with pytest.raises(ConfigError, match="image_size"):
        DigitsDataset(image_size=2)


def _dataset_node(name: str):
    """A packaged dataset config without its Hydra defaults list (the recommended model), as composed."""
    node = OmegaConf.load(CONF / f"{name}.yaml")
    node.pop("defaults", None)
    return node


def test_yaml_configs_instantiate(tmp_path):
    from gan_cli.data.build import build_dataset as instantiate  # hydra instantiate + one-line errors

    d = instantiate(_dataset_node("digits"))
    assert isinstance(d, DigitsDataset) and d.name == "digits"
    for name in ("mnist", "fashion_mnist", "folder", "h5"):
        node = _dataset_node(name)
        assert node.name == name and node._target_.startswith("gan_cli.data.images.")
    _write_pngs(tmp_path / "imgs", {"": 4})
    node = _dataset_node("folder")
    node.path = str(tmp_path / "imgs")
    node.image_size = 8
    node.holdout_fraction = 0.25
    assert instantiate(node).sample_shape == (8, 8, 1)
    with pytest.raises(ConfigError, match="dataset.path"):
        instantiate(_dataset_node("folder"))


# --------------------------------------------------------------------------- folders
def _write_pngs(root: Path, groups: dict[str, int], size=(12, 10), mode="L") -> None:
    rng = np.random.default_rng(0)
    for cls, n in groups.items():
        folder = root / cls if cls else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")


def test_folder_with_class_subfolders(tmp_path):
    _write_pngs(tmp_path, {"cat": 6, "dog": 4})
    d = FolderDataset(path=str(tmp_path), image_size=8, channels=1, holdout_fraction=0.2)
    x, y = d.arrays()
    xh, yh = d.holdout()
    assert x.shape == (8, 8, 8, 1) and xh.shape == (2, 8, 8, 1)
    assert d.num_classes == 2 and d.class_names == ["cat", "dog"]
    assert np.bincount(np.concatenate([y, yh])).tolist() == [6, 4]
    assert -1.0 <= x.min() and x.max() <= 1.0 and d.pixel_range == (0.0, 255.0)


def test_folder_unlabelled_rgb(tmp_path):
    _write_pngs(tmp_path, {"": 5}, mode="RGB")
    d = FolderDataset(path=str(tmp_path), image_size=[6, 4], channels=3, holdout_fraction=0.2)
    x, y = d.arrays()
    assert x.shape == (4, 6, 4, 3) and y is None and d.num_classes == 0


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        FolderDataset(path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        FolderDataset(path=str(tmp_path / "empty"))
    _write_pngs(tmp_path / "bad", {"": 3})
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        FolderDataset(path=str(tmp_path / "bad"))
    _write_pngs(tmp_path / "mixed", {"": 2, "a": 2})
    with pytest.raises(DataError, match="both images and class subfolders"):
        FolderDataset(path=str(tmp_path / "mixed"))
    with pytest.raises(DataError, match="channels"):
        FolderDataset(path=str(tmp_path / "mixed" / "a"), channels=2)


# --------------------------------------------------------------------------- HDF5
def test_h5_float_with_labels(tmp_path):
    path = tmp_path / "data.h5"
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (20, 6, 6)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["images"] = x
        f["labels"] = np.arange(20) % 3
    d = H5Dataset(path=str(path), holdout_fraction=0.25)
    assert d.sample_shape == (6, 6, 1) and d.num_classes == 3
    assert d.pixel_range == (float(x.min()), float(x.max()))
    xt, yt = d.arrays()
    assert xt.shape == (15, 6, 6, 1) and yt.shape == (15,) and xt.min() >= -1.0 and xt.max() <= 1.0
    # user space restores the original values
    xall = np.concatenate([d.to_user_space(xt), d.to_user_space(d.holdout()[0])])
    assert np.allclose(np.sort(xall.ravel()), np.sort(x.ravel()), atol=1e-5)


def test_h5_uint8_rgb_unlabelled_and_pixel_range(tmp_path):
    path = tmp_path / "rgb.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.random.default_rng(0).integers(0, 200, (10, 8, 8, 3), dtype=np.uint8)
    d = H5Dataset(path=str(path), images_key="x")
    assert d.sample_shape == (8, 8, 3) and d.num_classes == 0 and d.pixel_range == (0.0, 255.0)
    assert H5Dataset(path=str(path), images_key="x", pixel_range=[0, 1000]).arrays()[0].max() < -0.5
    with pytest.raises(DataError, match="outside dataset.pixel_range"):
        H5Dataset(path=str(path), images_key="x", pixel_range=[0, 100])


def test_h5_errors(tmp_path):
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f["images"] = np.zeros((10, 4), np.float32)
        f["imgs"] = np.random.default_rng(0).uniform(size=(10, 4, 4)).astype(np.float32)
        f["labels_bad"] = np.zeros((9,), np.int64)
    with pytest.raises(DataError, match=r"good\.h5: images have shape \(10, 4\)"):
        H5Dataset(path=str(good))
    with pytest.raises(DataError, match="no dataset 'pixels'.*images_key"):
        H5Dataset(path=str(good), images_key="pixels")
    with pytest.raises(DataError, match="no dataset 'lab'"):
        H5Dataset(path=str(good), images_key="imgs", labels_key="lab")
    with pytest.raises(DataError, match=r"labels have shape \(9,\)"):
        H5Dataset(path=str(good), images_key="imgs", labels_key="labels_bad")
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DataError, match=r"corrupt\.h5: not a readable HDF5 file"):
        H5Dataset(path=str(corrupt))
    with pytest.raises(DataError, match="no such file"):
        H5Dataset(path=str(tmp_path / "nope.h5"))


# --------------------------------------------------------------------------- MNIST
def _mnist_arrays(n_train=40, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                y_train=rng.integers(0, 10, n_train).astype(np.uint8),
                x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                y_test=rng.integers(0, 10, n_test).astype(np.uint8))


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_from_npz_and_idx(tmp_path):
    arrays = _mnist_arrays()
    np.savez(tmp_path / "mnist.npz", **arrays)
    d = MnistDataset(path=str(tmp_path / "mnist.npz"))
    x, y = d.arrays()
    xh, yh = d.holdout()
    assert x.shape == (40, 28, 28, 1) and xh.shape == (10, 28, 28, 1) and d.num_classes == 10
    assert np.array_equal(y, arrays["y_train"]) and np.array_equal(yh, arrays["y_test"])
    assert np.allclose(d.to_user_space(x), arrays["x_train"], atol=1e-3)

    idx = tmp_path / "idx"
    idx.mkdir()
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    for key, name in names.items():
        _write_idx(idx / f"{name}.gz", arrays[key])
    d2 = MnistDataset(name="fashion_mnist", variant="fashion_mnist", path=str(idx), image_size=32, limit=20)
    assert d2.arrays()[0].shape == (20, 32, 32, 1)
    assert np.array_equal(d2.arrays()[1], arrays["y_train"][:20])


def test_mnist_bad_files(tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(b"definitely not a zip file")
    with pytest.raises(DataError, match=r"mnist\.npz: not a readable \.npz"):
        MnistDataset(path=str(bad))
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="missing arrays y_train, x_test, y_test"):
        MnistDataset(path=str(partial))
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03junk")
    with pytest.raises(DataError, match="not a readable IDX file|missing"):
        MnistDataset(path=str(tmp_path / "idx"))
    with pytest.raises(DataError, match="no such file"):
        MnistDataset(path=str(tmp_path / "absent.npz"))


def test_mnist_offline_without_file(monkeypatch):
    import urllib.error

    import keras

    def offline():
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError) as err:
        MnistDataset()
    msg = str(err.value)
    assert "\n" not in msg and "/datasets/mnist.npz" in msg and "dataset.path=" in msg
    assert "Temporary failure in name resolution" in msg  # the reason, for users who are online


def test_offline_message_names_the_keras_cache(monkeypatch, tmp_path):
    from gan_cli.data.images import _keras_datasets_dir

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert _keras_datasets_dir() == str(tmp_path / "datasets")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "missing"))
    assert _keras_datasets_dir() == "/tmp/.keras/datasets"  # keras.utils.get_file's fallback


# --------------------------------------------------------------------------- writing samples
def test_write_samples_png_and_npy(tmp_path, digits):
    x, y = digits.arrays()
    digits.write_samples(x[:10], y[:10], tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as im:
        im.load()
        assert im.size[0] >= 4 * 8 and im.size[1] >= 3 * 8
    digits.write_samples(x[:10], None, tmp_path / "nolabels.png")
    assert (tmp_path / "nolabels.png").stat().st_size > 100
    digits.write_samples(x[:7], None, tmp_path / "s.npy")
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (7, 8, 8) and arr.dtype == np.float32 and arr.min() >= 0 and arr.max() <= 16
    assert np.allclose(arr, digits.to_user_space(x[:7]))
    with pytest.raises(UserError, match=r"\.png grids or \.npy"):
        digits.write_samples(x[:2], None, tmp_path / "s.jpg")


def test_write_samples_rgb_npy_shape(tmp_path):
    _write_pngs(tmp_path / "rgb", {"": 5}, mode="RGB")
    d = FolderDataset(path=str(tmp_path / "rgb"), image_size=8, channels=3, holdout_fraction=0.2)
    d.write_samples(d.arrays()[0], None, tmp_path / "rgb.npy")
    d.write_samples(d.arrays()[0], None, tmp_path / "rgb.png")
    arr = np.load(tmp_path / "rgb.npy")
    assert arr.shape == (4, 8, 8, 3) and 0 <= arr.min() and arr.max() <= 255
    with Image.open(tmp_path / "rgb.png") as im:
        assert im.mode in ("RGB", "RGBA")


def test_snapshot_grid_unconditional_and_class_rows(tmp_path, digits):
    from gan_cli.data.image_grid import class_rows, image_grid

    x, y = digits.arrays()
    digits.write_snapshot_image(x[:150], None, tmp_path / "step_00000010")
    with Image.open(tmp_path / "step_00000010.png") as im:
        im.load()
        assert im.size[0] >= 10 * 9 and im.size[1] >= 10 * 9
    assert (tmp_path / "final.png").read_bytes() == (tmp_path / "step_00000010.png").read_bytes()
    digits.write_snapshot_image(x[:100], y[:100], tmp_path / "step_00000020")
    assert (tmp_path / "final.png").read_bytes() == (tmp_path / "step_00000020.png").read_bytes()
    # one row per class: row k holds the first images labelled k, missing cells are NaN (grey)
    labels = np.array([3, 1, 3, 3, 0])
    cells = class_rows(x[:5], labels, 4, 2)
    assert cells.shape == (8, 8, 8, 1)
    assert np.array_equal(cells[0], x[4]) and np.isnan(cells[1]).all()
    assert np.array_equal(cells[2], x[1]) and np.isnan(cells[4:6]).all()
    assert np.array_equal(cells[6], x[0]) and np.array_equal(cells[7], x[2])
    grid = image_grid(cells, cols=2)
    assert grid.shape == (4 * 9 + 1, 2 * 9 + 1, 1) and np.all(grid[1 + 9:1 + 9 + 8, 1 + 9:1 + 9 + 8] == 0.5)
