"""The fused Conv2D -> LeakyReLU -> global max pool layer (gan_cli/fast/conv_max_pool.py): same outputs,
gradients and gradients of gradients as the three Keras layers it replaces in the seed-000 critic."""

from __future__ import annotations

import numpy as np
import pytest


def _pair(shape, filters, kernel, stride, seed=0, first=None):
    """(fused layer, function running the Keras layers it replaces, fused weights, Keras weights) with equal
    weights: ``[Conv2D(first) -> LeakyReLU(0.2) ->] Conv2D(filters) -> LeakyReLU(0.2) -> GlobalMaxPooling2D``."""
    import keras
    import tensorflow as tf

    from gan_cli.fast.conv_max_pool import ConvLeakyMaxPool

    keras.utils.set_random_seed(seed)
    fused = ConvLeakyMaxPool(filters, kernel, stride, 0.2, first_filters=first)
    fused.build(shape)
    fused.bias.assign(tf.random.normal((filters,), seed=seed) * 0.1)
    sizes = ([first] if first else []) + [filters]
    convs = [keras.layers.Conv2D(f, kernel, strides=stride, padding="same") for f in sizes]
    in_shape = shape
    for conv in convs:
        conv.build(in_shape)
        in_shape = conv.compute_output_shape(in_shape)
    if first:
        fused.first_bias.assign(tf.random.normal((first,), seed=seed + 1) * 0.1)
    values = fused.get_weights()
    for i, conv in enumerate(convs):
        conv.set_weights(values[2 * i: 2 * i + 2])
    act, pool = keras.layers.LeakyReLU(negative_slope=0.2), keras.layers.GlobalMaxPooling2D()

    def plain(t):
        for conv in convs:
            t = act(conv(t))
        return pool(t)

    return fused, plain, list(fused.weights), [w for conv in convs for w in conv.weights]


def _grads(layer, x, weights, upstream):
    """(output, dL/dx, dL/dweights, dP/dweights, dP/dupstream) for L = sum(layer(x) * upstream) and the
    gradient penalty P = ||dL/dx||^2 (``upstream`` a variable, as the critic's last Dense kernel is)."""
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(out * upstream)
        dx = inner.gradient(loss, x)
        penalty = tf.reduce_sum(tf.square(dx))
    # a bias that only shifts the pooled value has no second-order gradient: Keras gives zeros, the fused None
    second = [tf.zeros(w.shape) if g is None else g for w, g in zip(weights, outer.gradient(penalty, weights))]
    return out, dx, outer.gradient(loss, weights), second, outer.gradient(penalty, upstream)


def _assert_same(a, b):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)          # outputs
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)          # dL/dx (WGAN-GP's input gradient)
    for ga, gb in zip(a[2], b[2], strict=True):                           # dL/dkernel, dL/dbias
        np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-5)
    for ga, gb in zip(a[3], b[3], strict=True):                           # gradient of the gradient norm
        np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a[4], b[4], rtol=1e-4, atol=1e-5)          # ... and its path through upstream


@pytest.mark.parametrize("first", [None, 5], ids=["one conv", "two convs"])
@pytest.mark.parametrize("size,kernel,stride", [(32, 3, 2), (31, 3, 2), (9, 3, 1), (16, 5, 3), (12, 4, 2)])
def test_outputs_gradients_and_second_order_gradients_match_the_keras_layers(size, kernel, stride, first):
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).standard_normal((5, size, size, 4)), tf.float32)
    upstream = tf.Variable(np.random.default_rng(2).standard_normal((5, 6)), dtype=tf.float32)
    fused, plain, w_fused, w_plain = _pair(x.shape, 6, kernel, stride, first=first)
    # in a graph, as gan train runs it (and eagerly: custom gradients behave alike in both)
    _assert_same(tf.function(lambda: _grads(fused, x, w_fused, upstream))(), _grads(plain, x, w_plain, upstream))
    _assert_same(_grads(fused, x, w_fused, upstream), _grads(plain, x, w_plain, upstream))


@pytest.mark.parametrize("first", [None, 5], ids=["one conv", "two convs"])
def test_tied_maxima_split_the_gradient_like_reduce_max(first):
    """A constant input ties every interior position: dL/dx splits the gradient evenly over them, the weight
    gradients take the dense path, and both equal the Keras layers'."""
    import tensorflow as tf

    x = tf.ones((2, 8, 8, 3))
    upstream = tf.Variable(np.random.default_rng(3).standard_normal((2, 5)), dtype=tf.float32)
    fused, plain, w_fused, w_plain = _pair(x.shape, 5, 3, 1, first=first)  # stride 1: interior positions all tie
    _assert_same(tf.function(lambda: _grads(fused, x, w_fused, upstream))(), _grads(plain, x, w_plain, upstream))


@pytest.mark.parametrize("two", [False, True], ids=["one conv", "two convs"])
def test_half_precision_ties_go_to_the_first_maximum(two):
    """In bfloat16 (mixed precision) ties are common and the layer sends a tied maximum's gradient to the first
    maximal position (as tf.nn.max_pool's gradient does) instead of leaving its fast path."""
    import tensorflow as tf

    from gan_cli.fast.conv_max_pool import conv_leaky_max

    rng = np.random.default_rng(5)

    def halves(shape):  # values on a coarse grid: many exact ties in bfloat16
        values = np.round(rng.standard_normal(shape) * 2) / 2
        # two convs: non-negative inputs and kernels, so the largest sums lie in the interior, where a
        # constant input patch gives many positions the same value
        return tf.cast(tf.constant(np.abs(values) if two else values, tf.float32), tf.bfloat16)

    x = tf.ones((3, 20, 20, 2), tf.bfloat16) if two else halves((3, 10, 10, 2))
    first = (halves((3, 3, 2, 3)), tf.zeros((3,), tf.bfloat16)) if two else None
    kernel, bias = halves((3, 3, 3 if two else 2, 4)), tf.zeros((4,), tf.bfloat16)
    upstream = tf.cast(tf.constant(rng.standard_normal((3, 4)), tf.float32), tf.bfloat16)

    def pre_activation(x, kernel, bias, *first):
        if first:
            x = tf.nn.leaky_relu(tf.nn.conv2d(x, first[0], 2, "SAME") + first[1], 0.2)
        return tf.reshape(tf.nn.conv2d(x, kernel, 2, "SAME") + bias, (3, -1, 4))

    def first_max(x, kernel, bias, *first):  # reference: autodiff of a gather at the first argmax
        flat = pre_activation(x, kernel, bias, *first)
        top = tf.gather(flat, tf.argmax(flat, axis=1, output_type=tf.int32), axis=1, batch_dims=1)  # (B, F, F)
        y_max = tf.linalg.diag_part(top)
        return tf.where(y_max > 0, y_max, 0.2 * y_max)

    def grads(fn, dtype=tf.bfloat16):
        inputs = [tf.cast(t, dtype) for t in [x, kernel, bias, *(first or ())]]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(tf.cast(fn(*inputs) * tf.cast(upstream, dtype), tf.float32))
        return [tf.cast(g, tf.float32).numpy() for g in tape.gradient(loss, inputs)]

    y = pre_activation(x, kernel, bias, *(first or ()))
    tied = tf.reduce_sum(tf.cast(y == tf.reduce_max(y, axis=1, keepdims=True), tf.int32), axis=1) > 1
    assert bool(tf.reduce_any(tied))                                    # the input has ties
    fused = grads(lambda x, kernel, bias, *first: conv_leaky_max(x, kernel, bias, 2, 0.2, first=first or None))
    # against the first-maximum gradient in float32: at most twice the error of the same function in bfloat16
    # (rounding alone; a gradient at another tied position would be off by the gradient's size)
    for a, ref, exact in zip(fused, grads(first_max), grads(first_max, tf.float32), strict=True):
        scale = np.abs(exact).max()
        assert np.abs(a - exact).max() <= 2 * np.abs(ref - exact).max() + 0.02 * scale


@pytest.mark.parametrize("first", [None, 3], ids=["one conv", "two convs"])
def test_gradients_under_xla_match(first):
    """Under train.jit_compile (XLA) the layer differentiates densely, with the same result."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(4).standard_normal((3, 12, 12, 2)), tf.float32)
    fused, plain, w_fused, w_plain = _pair(x.shape, 4, 3, 2, first=first)

    def grads(layer, weights):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, weights)

    compiled = tf.function(lambda: grads(fused, w_fused), jit_compile=True)()
    for ga, gb in zip(compiled, grads(plain, w_plain), strict=True):
        np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-5)


def test_csm_critic_uses_the_fused_layer_unless_told_not_to(tmp_path):
    from gan_cli import fast
    from gan_cli.core.errors import ConfigError
    from gan_cli.models import get_builder
    from gan_cli.data.build import build_dataset
    from conftest import compose

    # 16 mics with stride 1: a 16 x 16 last feature map, large enough for the fused layer (SPARSE_MIN_POSITIONS)
    cfg = compose(["dataset=csm", "model=csm_mlp", "dataset.array=minidsp_uma-16", "dataset.num_samples=16",
                   "model.generator.hidden=[8]", "model.discriminator.filters=[4,8]", "model.discriminator.strides=1"])
    data = build_dataset(cfg.dataset)

    def layer_types(on=True, **disc):
        model = cfg.model.copy()
        for key, value in disc.items():
            model.discriminator[key] = value
        with fast.switch(on):  # train.fast
            _, critic = get_builder("csm_mlp")(model, data, 8, False)
        return [type(layer).__name__ for layer in critic.layers], critic

    fused_types, fused = layer_types()
    plain_types, plain = layer_types(on=False)
    # two convs: both in the fused layer; three: the first stays a Conv2D whose LeakyReLU differentiates from
    # its output; one: the fused layer holds it alone
    assert fused_types == ["InputLayer", "ConvLeakyMaxPool", "Identity", "Dense"]
    assert [layer.first_filters for layer in fused.layers if hasattr(layer, "first_filters")] == [4]
    assert plain_types == ["InputLayer", "Conv2D", "LeakyReLU", "Conv2D", "LeakyReLU", "GlobalMaxPooling2D",
                           "Identity", "Dense"]
    assert layer_types(filters=[4, 8, 8])[0] == ["InputLayer", "Conv2D", "LeakyReLUFromOutput", "ConvLeakyMaxPool",
                                                 "Identity", "Dense"]
    assert layer_types(filters=[8])[0] == ["InputLayer", "ConvLeakyMaxPool", "Identity", "Dense"]
    # stride 2 twice: 4 x 4 positions, below SPARSE_MIN_POSITIONS -> the Keras convs (LeakyReLUs from outputs)
    assert layer_types(strides=2)[0] == ["InputLayer", "Conv2D", "LeakyReLUFromOutput", "Conv2D", "LeakyReLUFromOutput",
                                         "GlobalMaxPooling2D", "Identity", "Dense"]
    assert "ConvLeakyMaxPool" not in layer_types(spectral_norm=True)[0]
    # same weights in the same order: a checkpoint of either critic loads into the other
    plain.set_weights(fused.get_weights())
    x = np.random.default_rng(0).standard_normal((3, *data.sample_shape)).astype(np.float32)
    np.testing.assert_allclose(fused(x), plain(x), rtol=1e-5, atol=1e-6)
    import keras

    again = keras.Model.from_config(fused.get_config())  # the fused layer serialises with the critic
    again.set_weights(fused.get_weights())
    np.testing.assert_allclose(again(x), fused(x), rtol=1e-6, atol=1e-6)
    for slope in (-0.1, 1.0, "steep"):  # the fused layer relies on a non-decreasing LeakyReLU
        with pytest.raises(ConfigError, match=r"negative_slope must be a number in \[0, 1\)"):
            layer_types(negative_slope=slope)
