"""ReLUFromOutput and LeakyReLUFromOutput (gan_cli/fast/activations.py): the Keras layers' values,
gradients and gradients of gradients, from a graph without the chain of zero products that TensorFlow's
second-order ReLU gradient pushes back through the forward pass."""

from __future__ import annotations

import numpy as np
import pytest


def _grads(layer):
    """(y, dL/dx, d||dL/dx||^2/dx) for L = sum(layer(x^2 w) w): first and second order through ``layer``."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(6).standard_normal((4, 5, 5, 3)), tf.float32)
    w = tf.constant(np.random.default_rng(7).standard_normal((4, 5, 5, 3)), tf.float32)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = layer(x * x * w)
            loss = tf.reduce_sum(y * w)
        dx = inner.gradient(loss, x)
        penalty = tf.reduce_sum(dx * dx)
    return y, dx, outer.gradient(penalty, x)


@pytest.mark.parametrize("slope", [0.0, 0.2, 0.5])
def test_leaky_relu_from_output_has_the_keras_gradients(slope):
    import keras

    from gan_cli.fast.activations import LeakyReLUFromOutput

    for a, b in zip(_grads(LeakyReLUFromOutput(negative_slope=slope)), _grads(keras.layers.LeakyReLU(slope)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_relu_from_output_has_the_keras_gradients():
    import keras

    from gan_cli.fast.activations import ReLUFromOutput

    ours, keras_relu = _grads(ReLUFromOutput()), _grads(keras.layers.Activation("relu"))
    assert float(np.abs(ours[2]).max()) > 0  # the second-order term is not trivially zero here
    for a, b in zip(ours, keras_relu, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_gradient_penalty_graph_skips_the_zero_chain():
    """A WGAN-GP critic update on a 2-16-16-1 ReLU MLP (benchmarks/gp_critic_update.py's critic and loss): the
    same weight gradients as with Keras's ReLU, from 3 matrix products fewer (the weight and input gradients
    of the penalised batch's forward pass, and the first layer's weight gradient, that multiply TensorFlow's
    zeros for the mask's derivative)."""
    import importlib.util
    from pathlib import Path

    import keras
    import tensorflow as tf

    from gan_cli.fast.activations import ReLUFromOutput

    spec = importlib.util.spec_from_file_location(
        "gp_critic_update", Path(__file__).resolve().parents[1] / "benchmarks" / "gp_critic_update.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def update(activation, jit_compile=False):
        grads = tf.function(bench.penalty_grads(bench.critic(activation, width=16), batch=8),
                            jit_compile=jit_compile)
        return grads(), bench.matmuls(grads)

    (ours, ours_products), (plain, plain_products) = update(ReLUFromOutput), update(
        lambda: keras.layers.Activation("relu"))
    for a, b in zip(ours, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert ours_products == plain_products - 3, (ours_products, plain_products)
    # under XLA (train.jit_compile, the default on a GPU) the custom gradient compiles and agrees too
    xla, _ = update(ReLUFromOutput, jit_compile=True)
    for a, b in zip(xla, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mlp_uses_them():
    """model=mlp builds its ReLU and LeakyReLU hidden layers from these layers (G and D)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from gan_cli.data.toy2d import Toy2D
    from gan_cli.models.mlp import build_mlp

    data = Toy2D(name="ring", num_samples=64)
    for act, expected in (("relu", "ReLUFromOutput"), ("leaky_relu", "LeakyReLUFromOutput")):
        cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / "mlp.yaml")
        for net in (cfg.generator, cfg.discriminator):
            net.hidden, net.activation = [8, 8], act
        g, d = build_mlp(cfg, data, latent_dim=2, conditional=False)
        for model in (g, d):
            assert [type(layer).__name__ for layer in model.layers].count(expected) == 2
