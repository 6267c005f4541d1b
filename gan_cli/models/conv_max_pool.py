"""Conv2D -> LeakyReLU -> global max pool as one layer with a sparse weight-gradient pass.

The seed-000 critic ends in ``Conv2D(F, k, stride s, padding same) -> LeakyReLU -> GlobalMaxPooling2D``.
The pool passes back a gradient at one spatial position per (sample, filter): the argmax. Autodiff
still runs the convolution's two dense backward convolutions over all ``Ho * Wo`` positions, which
on the CSM critic (64 x 64 inputs, 16 x 16 x 128 last feature map) gives back zeros at 255 of every
256 positions. Here the kernel gradient touches only the argmax positions (a gather of ``k x k x C``
input patches and F small products: ``B * F * k * k * C`` multiply-adds instead of
``B * Ho * Wo * F * k * k * C``); the input gradient stays one dense backward convolution, which
measured faster than any sparse scatter TensorFlow offers on a CPU.

Exactness (float32): LeakyReLU is strictly increasing, so ``max(leaky(y)) = leaky(max y)`` at the same
position. ``tf.reduce_max`` (what ``GlobalMaxPooling2D`` differentiates through) splits the gradient
evenly between tied maxima; when any (sample, filter) has a tie, this layer takes the dense path,
which does the same. The backward pass is written in differentiable ops, so gradients of gradients
(WGAN-GP, R1) flow through it as through the dense layers (the argmax, like ``reduce_max``'s tie
mask, is piecewise constant). Under mixed precision ties go to the first maximum (``conv_leaky_max``).
"""

from __future__ import annotations

import keras

from gan_cli.models.tf_context import in_xla, op_determinism


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(output size, padding before) of TensorFlow's ``padding="SAME"``."""
    out = -(-size // stride)
    return out, max((out - 1) * stride + kernel - size, 0) // 2


def conv_leaky_max(x, kernel, bias, stride: int, slope: float):
    """``max_{h,w} leaky_relu(conv2d(x, kernel, stride, SAME) + bias)`` with the sparse backward pass.

    ``x`` ``(B, H, W, C)``, ``kernel`` ``(k, k, C, F)``, ``bias`` ``(F,)`` -> ``(B, F)``, all of one float
    dtype (float32, or float16/bfloat16 under mixed precision). Static ``H``, ``W``, ``C``, ``k`` and ``F``
    are required (the batch may be dynamic).

    Backward, with ``dy[b, f]`` the gradient at the pooled position ``p(b, f)`` (the first maximal one):

    * ``dL/dkernel[:, :, :, f] = sum_b dy[b, f] P[b, f]``, with ``P[b, f]`` sample ``b``'s ``k x k x C``
      input patch under ``p(b, f)`` (zero outside the input: SAME padding): a gather of B x F patches
      and F batched (1 x B) (B x k k C) products, instead of a backward convolution over all positions;
    * ``dL/dx``: the backward input convolution of the map holding ``dy[b, f]`` at ``p(b, f)`` and zeros
      elsewhere. Scattering the patch gradients back sparsely (a segment sum) measured slower on CPUs
      than this dense convolution, which TensorFlow's kernels run multi-threaded at the matmul rate.

    Ties: in float32 a (sample, filter) whose maximum is attained more than once sends the whole batch
    down the dense path (autodiff of the unfused layers), which splits the gradient evenly as
    ``reduce_max`` does, so the gradients equal the Keras layers'. In float16/bfloat16 ties are common
    (8 or 11 significant bits) and the gradient goes to the first maximal position, as ``tf.nn.max_pool``'s
    does (another subgradient of the max). Under XLA, and under op determinism on a GPU, the gradient
    is the dense one.
    """
    import tensorflow as tf

    _, height, width, channels = (int(d) if d is not None else None for d in x.shape)
    k, filters = int(kernel.shape[0]), int(kernel.shape[-1])
    out_h, pad_top = _same_padding(height, k, stride)
    out_w, pad_left = _same_padding(width, k, stride)
    positions = out_h * out_w
    # x zero-padded so that every window lies inside it; window: the k x k row offsets of one patch
    pad_h = max((out_h - 1) * stride + k - height, 0)
    pad_w = max((out_w - 1) * stride + k - width, 0)
    padded_h, padded_w = height + pad_h, width + pad_w
    window = tf.reshape(tf.range(k)[:, None] * padded_w + tf.range(k)[None, :], (-1,))
    exact_ties = x.dtype == tf.float32

    @tf.custom_gradient
    def fused(x, kernel, bias):
        y = tf.nn.conv2d(x, kernel, stride, "SAME") + bias               # (B, Ho, Wo, F)
        batch = tf.shape(y)[0]
        flat = tf.reshape(y, (batch, positions, filters))
        y_max = tf.reduce_max(flat, axis=1)                               # (B, F)
        out = tf.where(y_max > 0, y_max, slope * y_max)                   # leaky(max y) = max leaky(y)

        def dense_grad(g):  # autodiff of the unfused layers (splits tied maxima as reduce_max does)
            with tf.GradientTape() as tape:
                tape.watch([x, kernel, bias])
                yy = tf.nn.conv2d(x, kernel, stride, "SAME") + bias
                pooled = tf.reduce_max(tf.where(yy > 0, yy, slope * yy), axis=(1, 2))
            return tuple(tape.gradient(pooled, [x, kernel, bias], output_gradients=g))

        def sparse_grad(g):
            dy = g * tf.where(y_max > 0, tf.ones_like(y_max), slope * tf.ones_like(y_max))     # (B, F)
            pos = tf.argmax(flat, axis=1, output_type=tf.int32)                                  # (B, F)
            dy_map = tf.reshape(tf.one_hot(pos, positions, axis=1, dtype=dy.dtype) * dy[:, None, :], tf.shape(y))
            d_x = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy_map,
                                                strides=[1, stride, stride, 1], padding="SAME")
            x_pad = tf.pad(x, [[0, 0], [pad_top, pad_h - pad_top], [pad_left, pad_w - pad_left], [0, 0]])
            pos_t = tf.transpose(pos)                                                            # (F, B)
            corner = (tf.range(batch)[None, :] * (padded_h * padded_w) + pos_t // out_w * (stride * padded_w)
                      + pos_t % out_w * stride)                                                  # patch origin row
            rows = corner[:, :, None] + window                                                   # (F, B, k k)
            patches = tf.reshape(tf.gather(tf.reshape(x_pad, (-1, channels)), rows), (filters, batch, -1))
            d_w = tf.matmul(tf.transpose(dy)[:, None, :], patches)                               # (F, 1, k k C)
            d_kernel = tf.reshape(tf.transpose(tf.reshape(d_w, (filters, k * k * channels))), kernel.shape)
            return d_x, d_kernel, tf.reduce_sum(dy, axis=0)

        def grad(g):
            if in_xla() or (op_determinism() and tf.config.list_logical_devices("GPU")):
                # XLA and op determinism on a GPU: the dense gradient, as the unfused layers would have
                return dense_grad(g)
            if not exact_ties:
                return sparse_grad(g)
            ties = tf.reduce_any(tf.reduce_sum(tf.cast(flat == y_max[:, None], tf.int32), axis=1) > 1)
            return tf.cond(ties, lambda: dense_grad(g), lambda: sparse_grad(g))

        return out, grad

    return fused(x, kernel, bias)


@keras.saving.register_keras_serializable(package="gan_cli")
class ConvLeakyMaxPool(keras.layers.Layer):
    """``Conv2D(filters, kernel_size, strides, padding="same") -> LeakyReLU(negative_slope) ->
    GlobalMaxPooling2D`` in one layer with the sparse backward pass of ``conv_leaky_max``.

    Input ``(B, H, W, C)`` (channels last) -> ``(B, filters)``. Weights ``kernel`` ``(k, k, C, F)`` and
    ``bias`` ``(F,)``, created in Conv2D's order and initialisers (glorot uniform, zeros), so a
    checkpoint of the unfused layers loads into it unchanged.
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 2, negative_slope: float = 0.2,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.strides, self.negative_slope = int(strides), float(negative_slope)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, self.kernel_size, channels, self.filters),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x):
        import tensorflow as tf

        return conv_leaky_max(x, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias),
                              self.strides, self.negative_slope)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.filters)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "negative_slope": self.negative_slope}


@keras.saving.register_keras_serializable(package="gan_cli")
class LeakyReLUFromOutput(keras.layers.LeakyReLU):
    """``keras.layers.LeakyReLU`` whose gradient is computed from its output instead of its input.

    Any shape in, the same shape out. For a slope in ``[0, 1)`` the output has the input's sign, so
    ``LeakyReluGrad(g, output)`` is exactly the usual gradient (second-order gradients too). What it buys:
    the pre-activation is no longer needed by the backward pass, so TensorFlow's graph optimiser
    (grappler's remapper) can fuse ``Conv2D -> BiasAdd -> LeakyRelu`` into one oneDNN convolution on a
    CPU instead of failing on that fusion and running the activation as a separate pass over memory.
    """

    def call(self, x):
        import tensorflow as tf

        slope = float(self.negative_slope)
        if not 0.0 <= slope < 1.0:
            return super().call(x)

        @tf.custom_gradient
        def leaky(x):
            y = tf.nn.leaky_relu(x, slope)
            return y, lambda g: tf.raw_ops.LeakyReluGrad(gradients=g, features=y, alpha=slope)

        return leaky(x)
