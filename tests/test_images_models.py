"""DCGAN builders: shapes for 8x8 and 28x28, conditional and not, config errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from gan_cli.core.errors import ConfigError
from gan_cli.models import get_builder
from gan_cli.models.conv import build_dcgan, resolution_steps

DCGAN_YAML = Path(__file__).resolve().parent.parent / "conf" / "model" / "dcgan.yaml"


def _data(shape, num_classes=10):
    return SimpleNamespace(name="fake", sample_shape=shape, num_classes=num_classes, output_transform=lambda: None)


def test_resolution_steps():
    assert [resolution_steps(s, s) for s in (8, 16, 28, 32, 64)] == [1, 2, 2, 3, 4]
    assert resolution_steps(7, 7) == 0 and resolution_steps(28, 32) == 2


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1)])
@pytest.mark.parametrize("conditional,conditioning", [(False, "concat"), (True, "concat"), (True, "projection")])
def test_dcgan_shapes(shape, conditional, conditioning):
    cfg = OmegaConf.load(DCGAN_YAML)
    cfg.conditioning = conditioning
    cfg.generator.base_channels = 16
    cfg.discriminator.base_channels = 16
    cfg.discriminator.dropout = 0.2
    G, D = get_builder("dcgan")(cfg, _data(shape), 12, conditional)
    z = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    y = np.array([0, 4, 9], np.int32)
    x = np.asarray(G([z, y]) if conditional else G(z))
    logits = np.asarray(D([x, y]) if conditional else D(x))
    assert x.shape == (3, *shape) and np.all(np.abs(x) <= 1.0)  # tanh output
    assert logits.shape == (3, 1)
    assert len(G.inputs) == len(D.inputs) == (2 if conditional else 1)
    if conditional:  # the label changes the output
        x_other = np.asarray(G([z, np.array([1, 5, 2], np.int32)]))
        assert not np.allclose(x, x_other)


def test_dcgan_options_and_rgb():
    cfg = {"generator": {"base_channels": 8, "norm": "layer"},
           "discriminator": {"base_channels": 8, "norm": "batch", "spectral_norm": True}, "init_std": 0}
    G, D = build_dcgan(cfg, _data((32, 32, 3)), 8, False)
    assert G.output_shape == (None, 32, 32, 3) and D.output_shape == (None, 1)
    assert any("spectral" in layer.__class__.__name__.lower() for layer in D.layers)


def test_dcgan_config_errors():
    with pytest.raises(ConfigError, match="needs labelled data"):
        build_dcgan({}, _data((8, 8, 1), num_classes=0), 8, True)
    with pytest.raises(ConfigError, match="needs image data"):
        build_dcgan({}, _data((2,)), 8, False)
    with pytest.raises(ConfigError, match="conditioning"):
        build_dcgan({"conditioning": "film"}, _data((8, 8, 1)), 8, True)
    with pytest.raises(ConfigError, match="normalisation"):
        build_dcgan({"generator": {"norm": "group"}}, _data((8, 8, 1)), 8, False)
