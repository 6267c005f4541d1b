"""The fused Conv2D -> LeakyReLU -> global max pool layer (gan_cli/models/conv_max_pool.py): same outputs,
gradients and gradients of gradients as the three Keras layers it replaces in the seed-000 critic."""

from __future__ import annotations

import numpy as np
import pytest


def _pair(shape, filters, kernel, stride, seed=0):
    """(fused layer, function running Conv2D -> LeakyReLU(0.2) -> GlobalMaxPooling2D) with equal weights."""
    import keras
    import tensorflow as tf

    from gan_cli.models.conv_max_pool import ConvLeakyMaxPool

    keras.utils.set_random_seed(seed)
    fused = ConvLeakyMaxPool(filters, kernel, stride, 0.2)
    fused.build(shape)
    fused.bias.assign(tf.random.normal((filters,), seed=seed) * 0.1)
    conv = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same")
    conv.build(shape)
    conv.set_weights(fused.get_weights())
    act, pool = keras.layers.LeakyReLU(negative_slope=0.2), keras.layers.GlobalMaxPooling2D()
    return fused, (lambda t: pool(act(conv(t)))), [fused.kernel, fused.bias], [conv.kernel, conv.bias]


def _grads(layer, x, weights, upstream):
    """(output, dL/dx, dL/dweights, d||dL/dx||^2/dweights) for L = sum(layer(x) * upstream)."""
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(out * upstream)
        dx = inner.gradient(loss, x)
        penalty = tf.reduce_sum(tf.square(dx))
    return out, dx, outer.gradient(loss, weights), outer.gradient(penalty, weights[:1])


@pytest.mark.parametrize("size,kernel,stride", [(32, 3, 2), (31, 3, 2), (9, 3, 1), (16, 5, 3)])
def test_outputs_gradients_and_second_order_gradients_match_the_keras_layers(size, kernel, stride):
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).standard_normal((5, size, size, 4)), tf.float32)
    upstream = tf.constant(np.random.default_rng(2).standard_normal((5, 6)), tf.float32)
    fused, plain, w_fused, w_plain = _pair(x.shape, 6, kernel, stride)
    a, b = _grads(fused, x, w_fused, upstream), _grads(plain, x, w_plain, upstream)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)          # outputs
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)          # dL/dx (WGAN-GP's input gradient)
    for ga, gb in zip(a[2], b[2]):                                        # dL/dkernel, dL/dbias
        np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a[3][0], b[3][0], rtol=1e-4, atol=1e-5)    # gradient of the gradient norm


def test_tied_maxima_split_the_gradient_like_reduce_max():
    """A constant input ties every position: the layer takes the dense path, which splits evenly."""
    import tensorflow as tf

    x = tf.ones((2, 8, 8, 3))
    upstream = tf.constant(np.random.default_rng(3).standard_normal((2, 5)), tf.float32)
    fused, plain, w_fused, w_plain = _pair(x.shape, 5, 3, 1)  # stride 1: interior positions all tie
    a, b = _grads(fused, x, w_fused, upstream), _grads(plain, x, w_plain, upstream)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
    for ga, gb in zip(a[2], b[2]):
        np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-5)


def test_half_precision_ties_go_to_the_first_maximum():
    """In bfloat16 (mixed precision) ties are common and the layer sends a tied maximum's gradient to the first
    maximal position (as tf.nn.max_pool's gradient does) instead of leaving its fast path."""
    import tensorflow as tf

    from gan_cli.models.conv_max_pool import conv_leaky_max

    rng = np.random.default_rng(5)
    x = tf.cast(tf.constant(np.round(rng.standard_normal((3, 10, 10, 2)) * 2) / 2, tf.float32), tf.bfloat16)
    kernel = tf.cast(tf.constant(np.round(rng.standard_normal((3, 3, 2, 4)) * 2) / 2, tf.float32), tf.bfloat16)
    bias = tf.zeros((4,), tf.bfloat16)
    upstream = tf.cast(tf.constant(rng.standard_normal((3, 4)), tf.float32), tf.bfloat16)

    def first_max(x, kernel, bias):  # reference: autodiff of a gather at the first argmax
        y = tf.nn.conv2d(x, kernel, 2, "SAME") + bias
        flat = tf.reshape(y, (3, -1, 4))
        top = tf.gather(flat, tf.argmax(flat, axis=1, output_type=tf.int32), axis=1, batch_dims=1)  # (B, F, F)
        y_max = tf.linalg.diag_part(top)
        return tf.where(y_max > 0, y_max, 0.2 * y_max)

    def grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            loss = tf.reduce_sum(tf.cast(fn(x, kernel, bias) * upstream, tf.float32))
        return tape.gradient(loss, [x, kernel, bias])

    y = tf.reshape(tf.nn.conv2d(x, kernel, 2, "SAME"), (3, -1, 4))
    tied = tf.reduce_sum(tf.cast(y == tf.reduce_max(y, axis=1, keepdims=True), tf.int32), axis=1) > 1
    assert bool(tf.reduce_any(tied))                                    # the input has ties
    for a, b in zip(grads(lambda *t: conv_leaky_max(*t, stride=2, slope=0.2)), grads(first_max)):
        np.testing.assert_allclose(tf.cast(a, tf.float32), tf.cast(b, tf.float32), rtol=2e-2, atol=2e-2)


def test_leaky_relu_from_output_has_the_keras_gradients():
    """LeakyReLUFromOutput: the same values, gradients and second-order gradients as keras.layers.LeakyReLU."""
    import keras
    import tensorflow as tf

    from gan_cli.models.conv_max_pool import LeakyReLUFromOutput

    x = tf.constant(np.random.default_rng(6).standard_normal((4, 5, 5, 3)), tf.float32)
    w = tf.constant(np.random.default_rng(7).standard_normal((4, 5, 5, 3)), tf.float32)

    def grads(layer):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = layer(x * x * w)
                loss = tf.reduce_sum(y * w)
            dx = inner.gradient(loss, x)
            penalty = tf.reduce_sum(dx * dx)
        return y, dx, outer.gradient(penalty, x)

    for a, b in zip(grads(LeakyReLUFromOutput(negative_slope=0.2)), grads(keras.layers.LeakyReLU(negative_slope=0.2))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_gradients_under_xla_match():
    """Under train.jit_compile (XLA: no tf.unique) the layer differentiates densely, with the same result."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(4).standard_normal((3, 12, 12, 2)), tf.float32)
    fused, plain, w_fused, w_plain = _pair(x.shape, 4, 3, 2)

    def grads(layer, weights):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, weights)

    compiled = tf.function(lambda: grads(fused, w_fused), jit_compile=True)()
    for ga, gb in zip(compiled, grads(plain, w_plain)):
        np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-5)


def test_csm_critic_uses_the_fused_layer_unless_told_not_to(tmp_path):
    from gan_cli.errors import ConfigError
    from gan_cli.models import get_builder
    from gan_cli.train import build_dataset
    from conftest import compose

    cfg = compose(["dataset=csm", "model=csm_mlp", "dataset.array=minidsp_uma-16", "dataset.num_samples=16",
                   "model.generator.hidden=[8]", "model.discriminator.filters=[4,8]"])
    data = build_dataset(cfg.dataset)

    def layer_types(**disc):
        model = cfg.model.copy()
        for key, value in disc.items():
            model.discriminator[key] = value
        _, critic = get_builder("csm_mlp")(model, data, 8, False)
        return [type(layer).__name__ for layer in critic.layers], critic

    fused_types, fused = layer_types()
    plain_types, plain = layer_types(sparse_pool_grad=False)
    assert "ConvLeakyMaxPool" in fused_types and "GlobalMaxPooling2D" not in fused_types
    assert "ConvLeakyMaxPool" not in plain_types and "GlobalMaxPooling2D" in plain_types
    assert "LeakyReLUFromOutput" in fused_types and "LeakyReLUFromOutput" not in plain_types
    assert "ConvLeakyMaxPool" not in layer_types(spectral_norm=True)[0]
    # same weights in the same order: a checkpoint of either critic loads into the other
    plain.set_weights(fused.get_weights())
    x = np.random.default_rng(0).standard_normal((3, *data.sample_shape)).astype(np.float32)
    np.testing.assert_allclose(fused(x), plain(x), rtol=1e-5, atol=1e-6)
    import keras

    again = keras.Model.from_config(fused.get_config())  # the fused layer serialises with the critic
    again.set_weights(fused.get_weights())
    np.testing.assert_allclose(again(x), fused(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="sparse_pool_grad must be true or false"):
        layer_types(sparse_pool_grad="yes")
