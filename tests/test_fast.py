"""``train.fast``: the speed tricks of gan_cli.fast against their plain Keras equivalents.

Each trick has its own equivalence test (tests/test_activations.py, tests/test_conv_max_pool.py,
tests/test_throughput.py); here the switch itself: what it changes in a built GAN, and that a whole
run trains to the same weights either way.
"""

from __future__ import annotations

import numpy as np

from conftest import build, gan

# WGAN-GP with 3 critic updates per round: second-order gradients through the activations, the critic
# loop (unrolled when fast, a graph loop when plain) and RMSprop (fused kernel when fast)
BASE = ["dataset=ring", "loss=wgan_gp", "optimizer=rmsprop", "model.generator.hidden=[32,32]",
        "model.discriminator.hidden=[32,32]", "dataset.num_samples=2000", "train.n_critic=3", "train.batch_size=64"]


def _layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_the_switch_picks_the_layers_the_optimizer_and_the_step_shape():
    fast_gan, cfg, _ = build(["train.fast=true"], BASE)
    plain_gan, _, _ = build(["train.fast=false"], BASE)
    assert cfg.train.fast is True  # the default
    assert "ReLUFromOutput" in _layer_types(fast_gan.discriminator)
    assert "ReLUFromOutput" not in _layer_types(plain_gan.discriminator)
    assert "ReLU" in _layer_types(plain_gan.discriminator)
    assert type(fast_gan.d_optimizer).__name__ == "FusedRMSprop"
    assert type(plain_gan.d_optimizer).__name__ == "RMSprop"
    assert fast_gan.unroll_critic() and not plain_gan.unroll_critic()
    assert not plain_gan.batched_fakes


def test_a_run_trains_to_the_same_weights_fast_and_plain(tmp_path):
    from gan_cli.run.load import load_for_inference

    weights = {}
    for on in ("true", "false"):
        run = tmp_path / on
        assert gan("train", *BASE, f"train.fast={on}", "train.steps=6", "train.eval_every=6",
                   "train.checkpoint_every=6", "train.report=false", "train.progress=false",
                   f"hydra.run.dir={run}") == 0
        _, _, trained = load_for_inference(run)
        weights[on] = trained.generator.get_weights() + trained.discriminator.get_weights()
    fresh, _, _ = build([], BASE)  # the weights both runs start from: training moved them
    assert max(float(np.abs(a - b).max()) for a, b in zip(weights["true"], fresh.generator.get_weights()
                                                           + fresh.discriminator.get_weights())) > 1e-4
    for a, b in zip(weights["true"], weights["false"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
