"""`gan export`: the generator leaves the tool as a .keras file and a SavedModel that load in a Python
where gan_cli cannot be imported, and produce what `gan sample` writes."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import TINY, run_gan

# Runs in a fresh interpreter where every import of gan_cli fails (the editable install's finder
# included), so the exported files must load from stock Keras/TensorFlow alone.
CLEAN_LOADER = r"""
import importlib.abc, json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

class NoGanCli(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "gan_cli" or name.startswith("gan_cli."):
            raise ImportError("gan_cli is not importable here")

sys.meta_path.insert(0, NoGanCli())
sys.path = [p for p in sys.path if p not in ("", os.getcwd())]
try:
    import gan_cli  # noqa: F401
    raise SystemExit("gan_cli importable")
except ImportError:
    pass
import numpy as np, keras, tensorflow as tf
args = json.loads(sys.argv[1])
z = np.load(args["z"])
label = np.load(args["label"]) if args.get("label") else None
inputs = [z, label] if label is not None else z
np.save(args["keras_out"], keras.models.load_model(args["keras"]).predict(inputs, verbose=0))
served = tf.saved_model.load(args["saved_model"])
out = served.generate(z, label) if label is not None else served.generate(z)
np.save(args["saved_out"], out.numpy())
assert not any(m.startswith("gan_cli") for m in sys.modules)
"""


def _run_clean(tmp_path, **args) -> None:
    out = subprocess.run([sys.executable, "-c", CLEAN_LOADER, json.dumps({k: str(v) for k, v in args.items()})],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def _latent(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """The noise `gan sample --seed SEED` draws (gan_cli.training.gan.GAN.sample, gaussian latent)."""
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _export_both(run_dir, tmp_path):
    for args in (["-o", str(tmp_path / "g")], ["-o", str(tmp_path / "served"), "--format", "saved_model"]):
        out = run_gan(["export", str(run_dir), *args], cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "g.keras") as zf:
        assert "gan_cli" not in zf.read("config.json").decode()


def _sample_and_load_clean(run_dir, tmp_path, n: int, dim: int):
    """Export the run both ways, `gan sample` n samples, and run both exports on the same noise in a Python
    without gan_cli; returns (gan sample's output, the .keras model's output); the SavedModel's is sm.npy."""
    _export_both(run_dir, tmp_path)
    out = run_gan(["sample", str(run_dir), "-n", str(n), "-o", str(tmp_path / "s.npy")], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    np.save(tmp_path / "z.npy", _latent(n, dim))
    _run_clean(tmp_path, z=tmp_path / "z.npy", keras=tmp_path / "g.keras", saved_model=tmp_path / "served",
               keras_out=tmp_path / "k.npy", saved_out=tmp_path / "sm.npy")
    return np.load(tmp_path / "s.npy"), np.load(tmp_path / "k.npy")


def test_export_ring_with_ema_loads_without_gan_cli(tmp_path):
    run_dir = tmp_path / "run"
    out = run_gan(["train", *TINY, "train.g_ema=0.9", "model.generator.activation=leaky_relu",
                   f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    sampled, k = _sample_and_load_clean(run_dir, tmp_path, 9, 2)
    np.testing.assert_allclose(k, sampled, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "sm.npy"), sampled, rtol=1e-6, atol=1e-6)
    # a second export to the same path needs --force
    again = run_gan(["export", str(run_dir), "-o", str(tmp_path / "g.keras")], cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr


def test_export_conditional_digits_serves_pixel_units(tmp_path):
    run_dir = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("dataset.")]
    out = run_gan(["train", "dataset=digits", "model.conditional=true", *tiny, "train.steps=2", "train.eval_every=2",
                   "train.checkpoint_every=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    _export_both(run_dir, tmp_path)
    out = run_gan(["sample", str(run_dir), "-n", "6", "--label", "3", "-o", str(tmp_path / "s.npy")], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    dim = int(next(line.split(":")[1] for line in (run_dir / "resolved_config.yaml").read_text().splitlines()
                   if line.strip().startswith("dim:")))
    np.save(tmp_path / "z.npy", _latent(6, dim))
    np.save(tmp_path / "y.npy", np.full(6, 3, np.int32))
    _run_clean(tmp_path, z=tmp_path / "z.npy", label=tmp_path / "y.npy", keras=tmp_path / "g.keras",
               saved_model=tmp_path / "served", keras_out=tmp_path / "k.npy", saved_out=tmp_path / "sm.npy")
    sampled = np.load(tmp_path / "s.npy")  # pixel units, (n, 8, 8)
    np.testing.assert_allclose(np.load(tmp_path / "sm.npy"), sampled, rtol=1e-5, atol=1e-4)
    model_space = np.load(tmp_path / "k.npy")  # [-1, 1], (n, 8, 8, 1)
    assert model_space.shape == (6, 8, 8, 1) and np.all(np.abs(model_space) <= 1 + 1e-6)


@pytest.mark.parametrize("args, needle", [
    (["--format", "onnx"], "invalid choice"),
    (["-o", "/nonexistent_dir/g.keras"], "does not exist"),
])
def test_export_bad_arguments(tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    argv = ["export", str(tmp_path / "empty"), *(args if "-o" in args else ["-o", str(tmp_path / "g"), *args])]
    out = run_gan(argv, cwd=tmp_path)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr


def test_export_csm_physics_generator_reproduces_gan_sample(tmp_path):
    # the physics layer (transfer functions, keyed Wishart noise) is keras.ops only, so it exports as it is
    run_dir = tmp_path / "run"
    out = run_gan(["train", "loss=wgan", "dataset=csm", "dataset.array=minidsp_uma-16", "dataset.num_samples=32",
                   "dataset.eval_samples=10", "model.generator.hidden=[8]", "model.discriminator.hidden=[8]",
                   "model.discriminator.grid=4", "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2",
                   "train.batch_size=8", "train.progress=false", "train.report=false", f"hydra.run.dir={run_dir}"],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    sampled, k = _sample_and_load_clean(run_dir, tmp_path, 5, 128)   # complex (5, 16, 16), C[ref, ref] = 1
    np.testing.assert_allclose(k[..., 0] + 1j * k[..., 1], sampled, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "sm.npy"), sampled, rtol=1e-4, atol=1e-5)
