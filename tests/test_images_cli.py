"""Image GANs through the `gan` command: digits training with PNG grids, conditional sampling,
the goodfellow2014 experiment, folder/HDF5 data and the offline MNIST error.

Training runs go through ``gan_cli.cli.main.main`` in this process (TensorFlow is imported once);
runs whose exit status and stderr matter go through a subprocess.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import compose, gan, rows, run_gan

# A few seconds per run: tiny networks, 20 rounds, 2 evaluations.
TINY_IMG = ["train.steps=20", "train.eval_every=10", "train.checkpoint_every=20", "train.batch_size=32",
            "metrics.num_samples=200", "train.progress=false", "latent.dim=16", "model=dcgan",
            "model.generator.base_channels=8", "model.discriminator.base_channels=8"]




def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # decodes the whole file: fails on a truncated PNG
        return im.size


# --------------------------------------------------------------------------- unconditional digits
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    rc = gan("train", "dataset=digits", *TINY_IMG, f"hydra.run.dir={run_dir}")
    assert rc == 0
    return run_dir


def test_digits_training_writes_metrics_and_png_grids(digits_run):
    assert (digits_run / "DONE").is_file()
    r = rows(digits_run)
    assert [x["step"] for x in r] == [10, 20]
    for key in ("fcd", "fcd_floor", "fcd_noise", "classifier_score", "precision", "recall", "density", "coverage",
                "classes_covered", "class_kl"):
        assert r[-1][key] is not None, key
    assert "label_accuracy" not in r[-1]  # unconditional run
    assert r[-1]["fcd_floor"] < r[-1]["fcd_noise"] < r[-1]["fcd"]  # 20 steps: far from the real data
    samples = digits_run / "samples"
    for step in (10, 20):
        w, h = png_size(samples / f"step_{step:08d}.png")
        assert w >= 10 * 9 and h >= 10 * 9  # 10 x 10 grid of 8x8 digits plus padding
        assert (samples / f"step_{step:08d}.npz").is_file()
    assert (samples / "final.png").read_bytes() == (samples / "step_00000020.png").read_bytes()


def test_label_needs_a_conditional_model(digits_run, tmp_path):
    out = run_gan(["sample", str(digits_run), "--label", "7", "-n", "4", "-o", str(tmp_path / "x.png")], cwd=tmp_path)
    assert out.returncode == 2 and "conditional" in out.stderr and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- conditional digits
@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cgan") / "run"
    rc = gan("train", "dataset=digits", "model.conditional=true", *TINY_IMG,
             f"hydra.run.dir={run_dir}")
    assert rc == 0
    return run_dir


def test_conditional_run_logs_label_accuracy_and_class_rows(cgan_run):
    last = rows(cgan_run)[-1]
    assert 0.0 <= last["label_accuracy"] <= 1.0 and 0 <= last["classes_covered"] <= 10
    w, h = png_size(cgan_run / "samples" / "step_00000020.png")
    assert w >= 10 * 9 and h >= 10 * 9  # one row per class, 10 columns
    with np.load(cgan_run / "samples" / "step_00000020.npz") as snap:
        assert snap["fake"].shape[1:] == (8, 8, 1) and snap["labels"].shape == (snap["fake"].shape[0],)


def test_sample_label_png_and_npy(cgan_run, tmp_path):
    assert gan("sample", str(cgan_run), "--label", "7", "-n", "10", "-o", str(tmp_path / "sevens.png")) == 0
    w, h = png_size(tmp_path / "sevens.png")
    assert w >= 4 * 8 and h >= 3 * 8  # 10 images -> 4 x 3 grid of 8x8 images
    assert gan("sample", str(cgan_run), "--label", "7", "-n", "10", "-o", str(tmp_path / "sevens.npy")) == 0
    arr = np.load(tmp_path / "sevens.npy")
    assert arr.shape == (10, 8, 8) and arr.dtype == np.float32
    assert arr.min() >= 0.0 and arr.max() <= 16.0 and arr.max() > arr.min()  # digits' own pixel range 0..16
    # the same noise seed and label gives the same images
    assert gan("sample", str(cgan_run), "--label", "7", "-n", "10", "-o", str(tmp_path / "again.npy")) == 0
    assert np.array_equal(np.load(tmp_path / "again.npy"), arr)


def test_sample_label_out_of_range(cgan_run, tmp_path):
    out = run_gan(["sample", str(cgan_run), "--label", "10", "-n", "4", "-o", str(tmp_path / "x.png")], cwd=tmp_path)
    assert out.returncode == 2 and "--label must be in 0..9" in out.stderr
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- goodfellow2014
def test_goodfellow2014_composes_with_the_paper_settings():
    cfg = compose(["experiment=goodfellow2014"])
    assert cfg.dataset.name == "mnist" and cfg.model.name == "maxout" and cfg.loss.name == "nsgan"
    assert cfg.latent.dim == 100 and cfg.latent.distribution == "uniform"
    assert list(cfg.model.generator.hidden) == [1200, 1200] and cfg.model.generator.activation == "relu"
    d = cfg.model.discriminator
    assert list(d.hidden) == [240, 240] and d.activation == "maxout" and d.maxout_pieces == 5 and d.dropout > 0
    assert cfg.train.batch_size == 100 and cfg.train.n_critic == 1
    for net in ("generator", "discriminator"):
        opt = cfg.optimizer[net]
        assert (opt.name, opt.lr, opt.momentum, opt.momentum_final) == ("sgd", 0.1, 0.5, 0.7)


def test_goodfellow2014_trains_on_digits(tmp_path):
    run_dir = tmp_path / "run"
    rc = gan("train", "experiment=goodfellow2014", "dataset=digits", "train.steps=4", "train.eval_every=2",
             "train.checkpoint_every=4", "metrics.num_samples=100", "train.progress=false",
             f"hydra.run.dir={run_dir}")
    assert rc == 0
    assert [r["step"] for r in rows(run_dir)] == [2, 4] and rows(run_dir)[-1]["fcd"] is not None
    assert (run_dir / "samples" / "step_00000004.png").is_file()
    out = tmp_path / "gf.npy"
    assert gan("sample", str(run_dir), "-n", "6", "-o", str(out)) == 0
    arr = np.load(out)
    assert arr.shape == (6, 8, 8) and arr.min() >= 0.0 and arr.max() <= 16.0  # MLP output matches the data


# --------------------------------------------------------------------------- folder and HDF5 data
def test_folder_dataset_trains_and_samples(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (20, 16), dtype=np.uint8), mode="L").save(tmp_path / "imgs" / cls / f"{i}.png")
    run_dir = tmp_path / "run"
    rc = gan("train", "dataset=folder", f"dataset.path={tmp_path / 'imgs'}", "dataset.image_size=8",
             "dataset.holdout_fraction=0.25", "model.conditional=true", *TINY_IMG, f"hydra.run.dir={run_dir}")
    assert rc == 0 and (run_dir / "samples" / "final.png").is_file()
    assert gan("sample", str(run_dir), "--label", "1", "-n", "3", "-o", str(tmp_path / "b.npy")) == 0
    arr = np.load(tmp_path / "b.npy")
    assert arr.shape == (3, 8, 8) and 0.0 <= arr.min() and arr.max() <= 255.0


def test_h5_dataset_trains_and_samples_in_its_pixel_range(tmp_path):
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "imgs.h5", "w") as f:
        f["images"] = rng.uniform(-5.0, 3.0, (40, 8, 8, 3)).astype(np.float32)  # unlabelled RGB, range -5..3
    run_dir = tmp_path / "run"
    rc = gan("train", "dataset=h5", f"dataset.path={tmp_path / 'imgs.h5'}", *TINY_IMG, f"hydra.run.dir={run_dir}")
    assert rc == 0 and (run_dir / "samples" / "step_00000020.png").is_file()
    assert gan("sample", str(run_dir), "-n", "5", "-o", str(tmp_path / "s.npy")) == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (5, 8, 8, 3) and arr.min() >= -5.0 and arr.max() <= 3.0  # the data's own range


# --------------------------------------------------------------------------- MNIST offline
def _offline_env(tmp_path: Path) -> dict:
    """No MNIST in the Keras cache and every download refused at once (a closed local proxy port)."""
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    return {"KERAS_HOME": str(keras_home), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


@pytest.mark.parametrize("extra,needle", [
    ([], "dataset.path="),                                      # keras download fails: where to put the file
    (["dataset.path=/nonexistent/mnist.npz"], "no such file"),  # a path that is not there
])
def test_mnist_offline_without_file_is_one_line_exit_2(tmp_path, monkeypatch, extra, needle):
    for key, value in _offline_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    out = run_gan(["train", "dataset=mnist", "train.steps=2", *extra, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                  timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
    assert "mnist.npz" in lines[0] and "Traceback" not in out.stderr
    assert not run_dir.exists()
    if not extra:  # the message names the folder Keras reads, i.e. KERAS_HOME/datasets here
        assert os.path.join(os.environ["KERAS_HOME"], "datasets") in lines[0]
