"""Conv2D -> LeakyReLU -> global max pool as one layer with an exact, sparse backward pass.

The seed-000 critic ends in ``Conv2D(F, k, stride s, padding same) -> LeakyReLU -> GlobalMaxPooling2D``.
The pool passes back a gradient at one spatial position per (sample, filter): the argmax. Autodiff
still runs the convolution's two dense backward convolutions over all ``Ho * Wo`` positions, which
on the CSM critic (64 x 64 inputs, 16 x 16 x 128 last feature map) is about two thirds of a critic
update's FLOPs and gives back zeros at 255 of every 256 positions. Here the backward pass touches
only the argmax positions (a gather of ``k x k x C`` input patches and a segment-sum scatter), so it
costs ``B * F * k * k * C`` multiply-adds instead of ``2 * B * Ho * Wo * F * k * k * C``.

Exactness: LeakyReLU is strictly increasing, so ``max(leaky(y)) = leaky(max y)`` at the same
position. ``tf.reduce_max`` (what ``GlobalMaxPooling2D`` differentiates through) splits the gradient
evenly between tied maxima; when any (sample, filter) has a tie, this layer takes the dense path,
which does the same. The backward pass is written in differentiable ops, so gradients of gradients
(WGAN-GP, R1) flow through it as through the dense layers (the argmax, like ``reduce_max``'s tie
mask, is piecewise constant).
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

    ``x`` ``(B, H, W, C)``, ``kernel`` ``(k, k, C, F)``, ``bias`` ``(F,)`` -> ``(B, F)``.
    Static ``H``, ``W``, ``C``, ``k`` and ``F`` are required (the batch may be dynamic).

    Backward, with ``dy[b, f]`` the gradient at the pooled position ``p(b, f)``: the distinct (sample,
    position) pairs ``u`` (about 70% of the B x F pairs on the CSM critic, as filters share maxima) get
    their ``k x k x C`` input patch ``P[u]`` (zero outside the input: SAME padding) and a row
    ``S[u, f] = dy[b, f]`` if ``p(b, f)`` is ``u``'s position, else 0. Then ``dL/dkernel = P^T S`` and the
    patch gradients ``S kernel^T`` are summed back into ``dL/dx``: two sparse matrix products over the
    pooled positions instead of two convolutions over all of them. Under XLA, and under op determinism
    on a GPU, the gradient is the dense one.
    """
    import tensorflow as tf

    _, height, width, channels = (int(d) if d is not None else None for d in x.shape)
    k, filters = int(kernel.shape[0]), int(kernel.shape[-1])
    out_h, pad_top = _same_padding(height, k, stride)
    out_w, pad_left = _same_padding(width, k, stride)
    positions = out_h * out_w
    offsets = tf.range(k)

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
            keys, pair = tf.unique(tf.reshape(pos + tf.range(batch)[:, None] * positions, (-1,)))
            pairs = tf.size(keys)
            # S (U, F): S[u, f] = dy[b, f] where u is (b, p(b, f)); one entry per (b, f), so it is sparse
            s = tf.sparse.SparseTensor(
                tf.cast(tf.stack([pair, tf.tile(tf.range(filters), [batch])], axis=1), tf.int64),
                tf.reshape(dy, (-1,)), tf.cast(tf.stack([pairs, filters]), tf.int64))
            sample, p = keys // positions, keys % positions
            rows = (p // out_w * stride - pad_top)[:, None] + offsets                            # (U, k)
            cols = (p % out_w * stride - pad_left)[:, None] + offsets
            inside = (((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :])
            index = (sample[:, None, None] * (height * width) + tf.clip_by_value(rows, 0, height - 1)[:, :, None]
                     * width + tf.clip_by_value(cols, 0, width - 1)[:, None, :])                # (U, k, k)
            index = tf.reshape(index, (-1,))
            inside = tf.reshape(inside, (-1, 1))
            patches = tf.gather(tf.reshape(x, (-1, channels)), index) * tf.cast(inside, x.dtype)  # (U k k, C)
            w = tf.reshape(kernel, (k * k * channels, filters))
            d_kernel = tf.reshape(tf.transpose(tf.sparse.sparse_dense_matmul(
                s, tf.reshape(patches, (pairs, k * k * channels)), adjoint_a=True)), kernel.shape)  # P^T S
            # padding positions get segment id -1: unsorted_segment_sum drops them
            d_patches = tf.reshape(tf.sparse.sparse_dense_matmul(s, w, adjoint_b=True), (-1, channels))  # S W^T
            d_x = tf.math.unsorted_segment_sum(d_patches, tf.where(inside[:, 0], index, -1),
                                               batch * height * width)
            return tf.reshape(d_x, tf.shape(x)), d_kernel, tf.reduce_sum(dy, axis=0)

        def grad(g):
            if in_xla() or (op_determinism() and tf.config.list_logical_devices("GPU")):
                # XLA cannot compile tf.unique; the sparse ops' GPU kernels add with atomics, which
                # train.deterministic's op determinism refuses
                return dense_grad(g)
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
