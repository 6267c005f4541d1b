"""Conv2D -> LeakyReLU -> global max pool (optionally after a first Conv2D -> LeakyReLU) as one layer
with a sparse backward pass.

The seed-000 critic ends in ``Conv2D(C1) -> LeakyReLU -> Conv2D(F) -> LeakyReLU -> GlobalMaxPooling2D``
(all convolutions ``k x k``, stride ``s``, padding same). The pool passes back a gradient at one spatial
position per (sample, filter): the argmax. Autodiff still runs the last convolution's two dense backward
convolutions over all ``Ho * Wo`` positions, which on the CSM critic (64 x 64 inputs, 16 x 16 x 128 last
feature map) gives back zeros at 255 of every 256 positions. Here:

* the last kernel's gradient touches only the argmax positions: a gather of ``k x k x C1`` patches of
  its input ``h`` and small products (``B * F * k * k * C1`` multiply-adds instead of
  ``B * Ho * Wo * F * k * k * C1``);
* with the first convolution inside the layer (``first``), its kernel and bias gradients also come
  straight from the pooled positions: the pooled gradient ``dy[b, f] * kernel[.., f]`` lands on the
  ``k x k`` window of ``h`` under ``p(b, f)`` and meets the first layer's input patches there, so the
  dense gradient map of ``h`` (one backward convolution as costly as the forward one) is never built
  for them. It is built, with one dense backward convolution, only when the layer's input needs a
  gradient (the generator's update, gradient penalties), and TensorFlow's graph pruning skips it in
  the critic's updates, whose inputs are data.

Exactness (float32): LeakyReLU (slope in [0, 1)) is non-decreasing, so ``max(leaky(y)) = leaky(max y)``
at the same position, and the sign of its output is the sign of its input, so its gradient can be read
from the output. Tied maxima get ``reduce_max``'s even split (``conv_leaky_max``), so the gradients equal
the Keras layers' within float rounding. The backward pass is written in differentiable ops, so gradients
of gradients (WGAN-GP, R1) flow through it as through the dense layers (the argmax, like ``reduce_max``'s
tie mask, is piecewise constant). Under mixed precision ties go to the first maximum.
"""

from __future__ import annotations

import keras
import numpy as np

from gan_cli.core.tf_context import in_xla, op_determinism


# The sparse backward pass moves B * F * k * k * C1 values whatever the size of the last feature map, while the
# dense one it replaces costs in proportion to the map's positions: below about 80 positions the plain layers
# train faster (the crossover is measured in benchmarks/results/throughput_csm_dense_pool_grad.md).
SPARSE_MIN_POSITIONS = 80


def pooled_positions(size: tuple[int, int], convs: int, stride: int) -> int:
    """Positions of the feature map after ``convs`` stride-``stride`` convolutions with padding same."""
    h, w = size
    for _ in range(convs):
        h, w = -(-h // stride), -(-w // stride)
    return h * w


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(output size, padding before) of TensorFlow's ``padding="SAME"``."""
    out = -(-size // stride)
    return out, max((out - 1) * stride + kernel - size, 0) // 2


def conv_leaky_max(x, kernel, bias, stride: int, slope: float, first: tuple | None = None):
    """``max_{h,w} leaky_relu(conv2d(h, kernel, stride, SAME) + bias)`` with the sparse backward pass, where
    ``h = x`` or, with ``first = (kernel0, bias0)``, ``h = leaky_relu(conv2d(x, kernel0, stride, SAME) + bias0)``.

    ``x`` ``(B, H, W, C0)``; ``kernel0`` ``(k0, k0, C0, C1)``, ``bias0`` ``(C1,)``; ``kernel`` ``(k, k, C1, F)``,
    ``bias`` ``(F,)`` -> ``(B, F)``, all of one float dtype (float32, or float16/bfloat16 under mixed
    precision). Static spatial sizes, channels and kernels are required (the batch may be dynamic).
    ``slope`` must lie in [0, 1) (LeakyReLU is then non-decreasing and keeps the sign of its input, so the
    first activation's gradient can be read from its output).

    Backward, with ``dy[b, f]`` the gradient at the pooled position ``p(b, f)`` and ``W(b, f)`` the ``k x k``
    window of ``h`` under it (rows of ``h``; taps in the SAME padding count as zero):

    * ``dL/dkernel[i, j, :, f] = sum_b dy[b, f] h[b, W(b, f)_ij]``: a gather of B x F x k x k rows of ``h``
      and F x k x k (1 x B) (B x C1) products, instead of a backward convolution over all positions;
    * with ``first``: ``dL/dz`` at the rows ``W(b, f)_ij`` is ``dy[b, f] kernel[i, j, :, f] * leaky'(z)``
      (``z`` the first pre-activation), and ``dL/d(kernel0, bias0)`` is the sum over those rows of
      ``[x patch, 1]^T dL/dz``, the x patches under the rows coming from one identity convolution of ``x``;
    * ``dL/dx``: the backward input convolution of the map holding ``dy[b, f]`` at ``p(b, f)`` and zeros
      elsewhere (TensorFlow runs it multi-threaded at the matmul rate; a sparse scatter measured no faster),
      then, with ``first``, the first layer's backward input convolution of ``leaky'(z) * dL/dh``. Graph
      pruning skips all of it where nothing needs ``dL/dx`` (a critic update on data). Its own gradient,
      which a gradient penalty takes, reads the pooled windows only (``pooled_backprop``).

    Ties: in float32 ``dL/dx`` spreads a tied maximum's gradient evenly over the tied positions, as
    ``reduce_max`` (what ``GlobalMaxPooling2D`` differentiates through) does, and the weight gradients take
    the dense path (autodiff of the unfused layers) for the whole batch when any (sample, filter) has a tie,
    so the gradients equal the Keras layers'. In float16/bfloat16 ties are common (8 or 11 significant bits)
    and the gradient goes to the first maximal position, as ``tf.nn.max_pool``'s does (another subgradient of
    the max). Under XLA, and under op determinism on a GPU, the gradient is the dense one.
    """
    import tensorflow as tf

    two = first is not None
    _, height, width, _ = (int(d) if d is not None else None for d in x.shape)
    k, filters = int(kernel.shape[0]), int(kernel.shape[-1])
    if two:
        k0, hidden = int(first[0].shape[0]), int(first[0].shape[-1])
        in_h, _ = _same_padding(height, k0, stride)   # h: the first convolution's output
        in_w, _ = _same_padding(width, k0, stride)
    else:
        in_h, in_w, hidden = height, width, int(x.shape[-1])
    out_h, pad_top = _same_padding(in_h, k, stride)
    out_w, pad_left = _same_padding(in_w, k, stride)
    positions = out_h * out_w
    exact_ties = x.dtype == tf.float32
    # window offsets (row, column) of the k x k taps, in the kernel's (i, j) order
    tap_r, tap_c = np.repeat(np.arange(k), k), np.tile(np.arange(k), k)

    def forward(x, weights):
        """(h, pre-activation of the last convolution ``(B, Ho, Wo, F)``)."""
        h = x
        if two:
            h = tf.nn.leaky_relu(tf.nn.bias_add(tf.nn.conv2d(x, weights[0], stride, "SAME"), weights[1]), slope)
        return h, tf.nn.bias_add(tf.nn.conv2d(h, weights[-2], stride, "SAME"), weights[-1])

    @tf.custom_gradient
    def fused(x, *weights):
        h, y = forward(x, weights)
        batch = tf.shape(y)[0]
        flat = tf.reshape(y, (batch, positions, filters))
        y_max = tf.reduce_max(flat, axis=1)                               # (B, F)
        out = tf.where(y_max > 0, y_max, slope * y_max)                   # leaky(max y) = max leaky(y)

        def dense_grad(g, sources):  # autodiff of the unfused layers (splits tied maxima as reduce_max does)
            with tf.GradientTape() as tape:
                tape.watch([x, *weights])
                _, yy = forward(x, weights)
                pooled = tf.reduce_max(tf.where(yy > 0, yy, slope * yy), axis=(1, 2))
            return tuple(tape.gradient(pooled, sources, output_gradients=g))

        def window_rows(pos, dtype):
            """The rows of h (flattened to ``(B * in_h * in_w, C1)``) under each pooled window, ``(F, k k, B)``
            int32, and whether each tap lies inside h (1) or in the padding (0; its row is clipped to a valid one)."""
            pos_t = tf.transpose(pos)                                                            # (F, B)
            r = (pos_t // out_w * stride - pad_top)[:, None, :] + tap_r[None, :, None]
            c = (pos_t % out_w * stride - pad_left)[:, None, :] + tap_c[None, :, None]
            inside = tf.cast((r >= 0) & (r < in_h) & (c >= 0) & (c < in_w), dtype)
            rows = (tf.range(batch)[None, None, :] * (in_h * in_w) + tf.clip_by_value(r, 0, in_h - 1) * in_w
                    + tf.clip_by_value(c, 0, in_w - 1))
            return rows, inside

        def filters_first(kernel):
            """``kernel`` ``(k, k, C1, F)`` as ``(F, k k, C1)``: one row of taps per filter."""
            return tf.transpose(tf.reshape(kernel, (k * k, hidden, filters)), (2, 0, 1))

        def kernel_grad(dy_rows, values):
            """``sum_b dy_rows[f, t, b] values[f, t, b, :]`` as a kernel gradient ``(k, k, C1, F)``."""
            d_w = tf.matmul(dy_rows[:, :, None, :], values)                                     # (F, k k, 1, C1)
            return tf.reshape(tf.transpose(tf.reshape(d_w, (filters, k * k, hidden)), (1, 2, 0)), weights[-2].shape)

        def pooled_backprop(dy, spread, rows, inside, ties):
            """dL/dh: the backward input convolution of ``spread * dy`` (``spread`` ``(B, P, F)``: 1 at the pooled
            position, or 1/count at each of tied maxima). Its own gradient (what a gradient penalty needs) reads
            the pooled windows only, unless ``ties`` (None: no ties possible) holds."""
            kernel_t = filters_first(weights[-2])                                                # (F, k k, C1)

            def dense_map(dy, kernel):
                dy_map = tf.reshape(spread * dy[:, None, :], tf.shape(y))
                return tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(h), filter=kernel, out_backprop=dy_map,
                                                      strides=[1, stride, stride, 1], padding="SAME")

            @tf.custom_gradient
            def back(dy, kernel):
                def grad_back(g_h):
                    def dense():
                        with tf.GradientTape() as tape:
                            tape.watch([dy, kernel])
                            d_h = dense_map(dy, kernel)
                        return tuple(tape.gradient(d_h, [dy, kernel], output_gradients=g_h))

                    def sparse():
                        g_rows = tf.gather(tf.reshape(g_h, (-1, hidden)), rows)                 # (F, k k, B, C1)
                        d_dy = tf.reduce_sum(tf.matmul(g_rows, kernel_t[..., None])[..., 0] * inside, axis=1)
                        return tf.transpose(d_dy), kernel_grad(tf.transpose(dy)[:, None, :] * inside, g_rows)

                    return sparse() if ties is None else tf.cond(ties, dense, sparse)

                return dense_map(dy, kernel), grad_back

            return back(dy, weights[-2])

        def input_grad(d_h):
            """dL/dx from dL/dh (only run when something needs dL/dx: graph pruning drops it otherwise)."""
            if not two:
                return d_h
            return tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=weights[0], strides=[1, stride, stride, 1], padding="SAME",
                # features: h without a gradient path (LeakyReluGrad passes zeros to its features, which would
                # send a gradient penalty through a useless backward pass of the first convolution)
                out_backprop=tf.raw_ops.LeakyReluGrad(gradients=d_h, features=tf.stop_gradient(h), alpha=slope))

        def weight_grads(dy, rows, inside):
            """Gradients of ``weights`` from ``dy`` ``(B, F)`` at the pooled windows ``rows``."""
            h_rows = tf.gather(tf.reshape(h, (-1, hidden)), rows)                               # (F, k k, B, C1)
            dy_rows = tf.transpose(dy)[:, None, :] * inside                                      # (F, k k, B)
            d_kernel = kernel_grad(dy_rows, h_rows)
            if not two:
                return d_kernel, tf.reduce_sum(dy, axis=0)
            # first kernel and bias: dL/dz at the window rows (leaky' read from h's sign), against the x patch
            # [x under the first kernel, 1] of each row (an identity convolution of x builds them all)
            taps = k0 * k0 * int(x.shape[-1])
            pooled_on_h = dy_rows[..., None] * filters_first(weights[-2])[:, :, None, :]        # (F, k k, B, C1)
            dz_rows = tf.raw_ops.LeakyReluGrad(gradients=pooled_on_h, features=h_rows, alpha=slope)
            identity = tf.reshape(tf.eye(taps, taps + 1, dtype=x.dtype), (k0, k0, -1, taps + 1))
            patches = tf.nn.bias_add(tf.nn.conv2d(x, identity, stride, "SAME"),  # (B, in_h, in_w, taps + 1)
                                     tf.one_hot(taps, taps + 1, dtype=x.dtype))
            x_rows = tf.gather(tf.reshape(patches, (-1, taps + 1)), rows)                       # (F, k k, B, taps + 1)
            if exact_ties:  # float32: F products and a sum (measured faster than one product with a long inner axis)
                d_first = tf.reduce_sum(tf.matmul(tf.reshape(x_rows, (filters, -1, taps + 1)),
                                                  tf.reshape(dz_rows, (filters, -1, hidden)), transpose_a=True), axis=0)
            else:  # half precision: one product, rounded once (the matmul accumulates in float32)
                d_first = tf.matmul(tf.reshape(x_rows, (-1, taps + 1)), tf.reshape(dz_rows, (-1, hidden)),
                                    transpose_a=True)
            return tf.reshape(d_first[:-1], weights[0].shape), d_first[-1], d_kernel, tf.reduce_sum(dy, axis=0)

        def grad(g):
            if in_xla() or (op_determinism() and tf.config.list_logical_devices("GPU")):
                # XLA and op determinism on a GPU: the dense gradient, as the unfused layers would have
                return dense_grad(g, [x, *weights])
            leaky_grad = tf.where(y_max > 0, tf.constant(1.0, y_max.dtype), tf.constant(slope, y_max.dtype))
            dy = g * tf.stop_gradient(leaky_grad)                                                # (B, F)
            if not exact_ties:  # half precision: the first maximum takes the gradient
                pos = tf.argmax(flat, axis=1, output_type=tf.int32)
                rows, inside = window_rows(pos, dy.dtype)
                spread = tf.one_hot(pos, positions, axis=1, dtype=dy.dtype)                     # (B, P, F)
                d_x = input_grad(pooled_backprop(dy, spread, rows, inside, None))
                return (d_x, *weight_grads(dy, rows, inside))
            hits = tf.cast(tf.equal(flat, y_max[:, None, :]), flat.dtype)                       # (B, P, F)
            if positions <= 1024:
                # count and position of the maxima in one small product, [1, p] . hits over the positions
                # (indices < 2^10 stay exact in TF32, GPUs' default float32 matmul precision)
                index = tf.constant(np.stack([np.ones(positions), np.arange(positions)])[None], flat.dtype)
                count_at = tf.matmul(index, hits)                                                # (B, 2, F)
                count, pos = count_at[:, 0], tf.cast(count_at[:, 1], tf.int32)  # pos: right when count is 1
            else:
                count, pos = tf.reduce_sum(hits, axis=1), tf.argmax(flat, axis=1, output_type=tf.int32)
            ties = tf.reduce_any(count > 1.5)
            rows, inside = window_rows(pos, dy.dtype)
            # dL/dx: reduce_max's own gradient map (tied maxima share dy evenly), outside any tf.cond so that
            # gradient penalties differentiate only these ops; the weights: dense path when a maximum is tied
            d_x = input_grad(pooled_backprop(dy, hits / count[:, None, :], rows, inside, ties))
            d_weights = tf.cond(ties, lambda: dense_grad(g, list(weights)), lambda: weight_grads(dy, rows, inside))
            return (d_x, *d_weights)

        return out, grad

    weights = (kernel, bias) if first is None else (*first, kernel, bias)
    return fused(x, *weights)


@keras.saving.register_keras_serializable(package="gan_cli")
class ConvLeakyMaxPool(keras.layers.Layer):
    """``Conv2D(filters, kernel_size, strides, padding="same") -> LeakyReLU(negative_slope) ->
    GlobalMaxPooling2D`` in one layer with the sparse backward pass of ``conv_leaky_max``; with
    ``first_filters``, a ``Conv2D(first_filters, kernel_size, strides, padding="same") -> LeakyReLU`` before
    it as well. ``negative_slope`` must lie in [0, 1).

    Input ``(B, H, W, C)`` (channels last) -> ``(B, filters)``. Weights ``first_kernel`` ``(k, k, C, C1)`` and
    ``first_bias`` ``(C1,)`` (with ``first_filters = C1``), then ``kernel`` ``(k, k, C1, F)`` and ``bias``
    ``(F,)``, created in the Conv2D layers' order and initialisers (glorot uniform, zeros), so a checkpoint
    of the unfused layers loads into it unchanged.
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 2, negative_slope: float = 0.2,
                 first_filters: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.strides, self.negative_slope = int(strides), float(negative_slope)
        self.first_filters = None if first_filters is None else int(first_filters)
        if not 0.0 <= self.negative_slope < 1.0:  # max(leaky(y)) = leaky(max(y)) needs a non-decreasing leaky
            raise ValueError(f"ConvLeakyMaxPool needs negative_slope in [0, 1), got {negative_slope}")

    def build(self, input_shape):
        channels, size = int(input_shape[-1]), (self.kernel_size, self.kernel_size)
        if self.first_filters is not None:
            self.first_kernel = self.add_weight(name="first_kernel", shape=(*size, channels, self.first_filters),
                                                initializer="glorot_uniform")
            self.first_bias = self.add_weight(name="first_bias", shape=(self.first_filters,), initializer="zeros")
            channels = self.first_filters
        self.kernel = self.add_weight(name="kernel", shape=(*size, channels, self.filters),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x):
        import tensorflow as tf

        first = None
        if self.first_filters is not None:
            first = (tf.convert_to_tensor(self.first_kernel), tf.convert_to_tensor(self.first_bias))
        return conv_leaky_max(x, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias),
                              self.strides, self.negative_slope, first=first)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.filters)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "negative_slope": self.negative_slope, "first_filters": self.first_filters}
