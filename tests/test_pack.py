"""PacGAN packing (``model.pack=m``): the packing helper, the packed discriminator, a tiny
training run with packing, and the config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import TINY, compose
from gan_cli.core.errors import ConfigError
from gan_cli.job.train import train


def _gan(pack: int, overrides=(), batch: int = 32):
    """A built (untrained) GAN on the ring data with ``model.pack=pack``."""
    from gan_cli.config import resolve as config_mod
    from gan_cli.data.build import build_dataset
    from gan_cli.training.build import build_gan

    cfg = compose([*TINY, "model=mlp", f"model.pack={pack}", f"train.batch_size={batch}", *overrides])
    config_mod.validate(cfg)
    data = build_dataset(cfg.dataset)
    cfg = config_mod.resolve(cfg, data)
    return build_gan(cfg, data)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_pack_samples_matches_numpy(m):
    gan = _gan(m)
    x = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)  # 8 samples of 2 features
    packed = np.asarray(gan.pack_samples(x))
    expected = np.stack([np.concatenate([x[i * m + j] for j in range(m)]) for i in range(8 // m)])
    assert packed.shape == (8 // m, 2 * m)
    np.testing.assert_array_equal(packed, expected)
    if m == 2:
        np.testing.assert_array_equal(packed[:2], [[0, 1, 2, 3], [4, 5, 6, 7]])


def test_pack_samples_flattens_multi_axis_samples():
    gan = _gan(3, batch=30)
    x = np.random.default_rng(0).standard_normal((6, 2, 3, 1)).astype(np.float32)
    packed = np.asarray(gan.pack_samples(x))
    np.testing.assert_array_equal(packed, x.reshape(2, 3 * 6))
    np.testing.assert_array_equal(packed[1, 6:12], x[4].ravel())


@pytest.mark.parametrize("m", [1, 2, 4])
def test_discriminator_input_is_packed(m):
    gan = _gan(m)
    assert tuple(gan.discriminator.input_shape) == (None, 2 * m)
    x = np.random.default_rng(1).standard_normal((8, 2)).astype(np.float32)
    assert tuple(gan.critic_packed(x).shape) == (8 // m, 1)
    # the per-sample view (plots): D of m copies of each sample
    per_sample = np.asarray(gan.critic(x))
    assert per_sample.shape == (8, 1)
    np.testing.assert_allclose(per_sample, np.asarray(gan.discriminator(np.tile(x, (1, m)))), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["hinge", "wgan_gp"])
def test_tiny_packed_run_trains(tmp_path, loss):
    result = train(compose([*TINY, "model=mlp", "model.pack=2", f"loss={loss}"]), tmp_path)
    assert result["step"] == 20
    for key in ("d_loss", "g_loss", "modes", "high_quality"):
        assert math.isfinite(result[key]), key
    assert "pack: 2" in (tmp_path / "resolved_config.yaml").read_text()


def test_maxout_model_packs():
    gan = _gan(2, ["model=maxout", "model.pack=2"])
    assert tuple(gan.discriminator.input_shape) == (None, 4)


@pytest.mark.parametrize("overrides, message", [
    (["model=mlp", "model.pack=3"], "train.batch_size=32 must be a multiple of model.pack=3"),
    (["model=mlp", "model.pack=0"], "model.pack must be an integer >= 1"),
    (["model=mlp", "model.pack=two"], "model.pack must be an integer >= 1"),
    (["model=mlp", "model.pack=2", "model.conditional=true"], "does not support model.conditional=true"),
    (["model=csm_mlp", "+model.pack=2"], "supported by model=mlp and model=maxout, not 'csm_mlp'"),
    (["model=dcgan", "+model.pack=2"], "supported by model=mlp and model=maxout, not 'dcgan'"),
    (["dataset=csm", "+model.pack=2"], "supported by model=mlp and model=maxout, not 'csm_"),  # its default model
])
def test_pack_validation(overrides, message):
    from gan_cli.config.resolve import validate

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        validate(compose([*TINY, *overrides]))
    assert "\n" not in str(info.value)


def test_pack_checked_against_resolved_batch_size(tmp_path):
    # batch_size null -> the dataset's default (256), checked once it is known
    with pytest.raises(ConfigError, match="must be a multiple of model.pack=7"):
        train(compose(["model=mlp", "model.pack=7", "train.batch_size=null", "train.steps=2",
                       "train.progress=false", "train.report=false"]), tmp_path)
