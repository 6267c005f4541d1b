"""Custom Keras layers: maxout (Goodfellow et al. 2013), minibatch discrimination and virtual
batch normalisation (Salimans et al. 2016, seeds 002 and 003)."""

from __future__ import annotations

import keras
from keras import ops

from gan_cli.core.tf_context import in_xla


@keras.saving.register_keras_serializable(package="gan_cli")
class Maxout(keras.layers.Layer):
    """Maxout units: ``units`` outputs, each the max over ``pieces`` affine pieces.

    Input ``(B, d)`` -> output ``(B, units)``; h_i(x) = max_j (x W_ij + b_ij).
    """

    def __init__(self, units: int, pieces: int = 5, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units, self.pieces = int(units), int(pieces)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(self.units * self.pieces, kernel_initializer=self.kernel_initializer)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        y = self.dense(x)
        y = ops.reshape(y, (-1, self.units, self.pieces))
        return ops.max(y, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def plain(self, x):
        """The same function from a stock Dense layer (these weights) and keras.ops (``gan export``)."""
        y = ops.reshape(self.dense(x), (-1, self.units, self.pieces))
        return ops.max(y, axis=-1)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "pieces": self.pieces,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


_FAR = 1e4  # padding value of MinibatchDiscrimination's last group (|M_i - pad| >= ~1e4: exp(-L1) = 0)


def _closeness(mt):
    """``mt`` ``(dim, kernels, n)`` (M transposed) -> ``o`` ``(kernels, n)``: o[b, i] = sum_j exp(-L1_b(i, j)),
    L1_b(i, j) = sum_c |M[i, b, c] - M[j, b, c]|, j = i included. A hand-written gradient (the
    kernels x n x n pairwise tensors stay contiguous) is about twice as fast as autodiff here on CPU."""
    import tensorflow as tf

    @tf.custom_gradient
    def forward(mt):
        l1 = 0.0
        for c in range(mt.shape[0]):
            x = mt[c]
            l1 = l1 + tf.abs(x[:, :, None] - x[:, None, :])  # (kernels, n, n)
        e = tf.exp(-l1)  # symmetric in (i, j)

        def grad(up):  # up (kernels, n): dL/do
            # dL/dM[k, b, c] = -sum_j e[b, k, j] (up[b, k] + up[b, j]) sign(M[k, b, c] - M[j, b, c])
            w = e * (up[:, :, None] + up[:, None, :])
            return tf.stack([-tf.reduce_sum(w * tf.sign(mt[c][:, :, None] - mt[c][:, None, :]), axis=-1)
                             for c in range(mt.shape[0])])

        return tf.reduce_sum(e, axis=-1), grad

    return forward(mt)


@keras.saving.register_keras_serializable(package="gan_cli")
class MinibatchDiscrimination(keras.layers.Layer):
    """Minibatch discrimination (Salimans et al. 2016): lets D compare the samples of a batch.

    Input ``f`` ``(B, A)`` (D's features); a learned tensor ``T`` ``(A, kernels, dim)`` maps each row to
    ``M_i = f_i T`` ``(kernels, dim)``; ``c_b(x_i, x_j) = exp(-||M_i,b - M_j,b||_L1)`` and
    ``o(x_i)_b = sum_j c_b(x_i, x_j)``. Output ``concat([f, o])`` ``(B, A + kernels)``.

    The sum runs over every j including j = i, as the paper writes it (the self term adds the
    constant 1 to each ``o_b``; OpenAI's code drops it, which only shifts the next layer's bias).
    ``average=True`` divides ``o`` by the number of rows compared (o in (0, 1] for any batch size):
    the same feature up to a constant factor, but with the plain sum (up to B = 256) D's logit moved
    so fast that D won at once on the ring experiment (docs/techniques.md).
    Rows are compared within groups of at most ``group`` consecutive rows (a training batch up to that
    size is one group): the pairwise tensors are ``kernels * group^2`` floats, so large inference calls
    (the report's 60 x 60 heat-map grid) stay bounded in memory instead of growing with B^2. The cost
    is O(B^2 * kernels * dim) per call: 256 rows, 50 kernels of 5 dims take ~0.1-0.2 s forward and
    backward on one CPU core, so small settings (e.g. 8 kernels of 4 dims) suit CPU runs.
    """

    def __init__(self, kernels: int = 50, dim: int = 5, group: int = 256, average: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.kernels, self.dim, self.group, self.average = int(kernels), int(dim), int(group), bool(average)

    def build(self, input_shape):
        # N(0, 0.05) as in the authors' code (improved-gan); T is stored flattened as (A, kernels * dim)
        self.kernel = self.add_weight(name="T", shape=(int(input_shape[-1]), self.kernels * self.dim),
                                      initializer=keras.initializers.RandomNormal(0.0, 0.05))

    def call(self, f):
        import tensorflow as tf

        m = ops.reshape(ops.matmul(f, ops.cast(self.kernel, f.dtype)), (-1, self.kernels, self.dim))
        mt = tf.transpose(m, (2, 1, 0))  # (dim, kernels, n): the pairwise axes innermost (fast on CPU)
        n, g = tf.shape(mt)[2], self.group

        def single():
            o = _closeness(mt)
            return o / tf.cast(n, o.dtype) if self.average else o

        def grouped():
            # pad to whole groups with rows far from every real row (exp(-L1) = 0: they add nothing)
            pad = (-n) % g
            padded = tf.pad(mt, [[0, 0], [0, 0], [0, pad]], constant_values=_FAR)
            chunks = tf.transpose(tf.reshape(padded, (self.dim, self.kernels, -1, g)), (2, 0, 1, 3))
            out = tf.map_fn(_closeness, chunks, fn_output_signature=mt.dtype)  # (groups, kernels, g)
            if self.average:  # rows compared in each group (the last one may be partly padding)
                rows = tf.reduce_sum(tf.reshape(tf.sequence_mask(n, n + pad, dtype=out.dtype), (-1, g)), axis=1)
                out = out / rows[:, None, None]
            return tf.reshape(tf.transpose(out, (1, 0, 2)), (self.kernels, -1))[:, :n]

        rows = f.shape[0]
        if rows is not None:  # static batch: pick the branch now
            o = single() if rows <= g else grouped()
        elif in_xla():  # XLA has no kernel for a cond around map_fn's TensorArray; grouped covers any n
            o = grouped()
        else:
            o = tf.cond(n <= g, single, grouped)  # (kernels, n)
        return ops.concatenate([f, ops.transpose(o)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], int(input_shape[-1]) + self.kernels)

    def get_config(self):
        return {**super().get_config(), "kernels": self.kernels, "dim": self.dim, "group": self.group,
                "average": self.average}


# ---- virtual batch normalisation (Salimans et al. 2016) ------------------------------
# A network with VBN runs on concat([reference batch, x]): ``ReferenceBatch`` prepends the stored
# reference rows at each model input, every ``VirtualBatchNormalization`` takes its statistics from
# those first ``n_ref`` rows only, and ``DropReference`` removes them after the last VBN layer (every
# later layer works row by row, so nothing downstream sees them). Row i's output therefore depends
# on row i and the fixed reference batch only, never on the other rows of its batch.


@keras.saving.register_keras_serializable(package="gan_cli")
class ReferenceBatch(keras.layers.Layer):
    """Prepends a stored reference batch: ``x`` ``(B, *shape)`` -> ``(n_ref + B, *shape)``.

    The reference rows are a non-trainable weight (``reference``, ``(n_ref, *shape)``) filled once by
    ``gan_cli.models.reference.fill_reference_batches`` (real data for D, fixed noise for G); being a
    weight, they are saved in every checkpoint, so resume, ``gan sample`` and ``gan evaluate`` use the
    same reference as training did. ``role``: ``"x"`` (data), ``"z"`` (noise) or ``"y"`` (labels).
    """

    def __init__(self, n_ref: int, role: str, **kwargs):
        super().__init__(**kwargs)
        self.n_ref, self.role = int(n_ref), str(role)

    def build(self, input_shape):
        self.reference = self.add_weight(name="reference", shape=(self.n_ref, *input_shape[1:]),
                                         initializer="zeros", trainable=False,
                                         dtype="int32" if self.role == "y" else "float32")

    def call(self, x):
        return ops.concatenate([ops.cast(self.reference, x.dtype), x], axis=0)

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])

    def compute_output_spec(self, x):
        return keras.KerasTensor((None, *x.shape[1:]), dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "n_ref": self.n_ref, "role": self.role}


@keras.saving.register_keras_serializable(package="gan_cli")
class DropReference(keras.layers.Layer):
    """Removes the ``n_ref`` reference rows ``ReferenceBatch`` prepended: ``(n_ref + B, ...)`` -> ``(B, ...)``."""

    def __init__(self, n_ref: int, **kwargs):
        super().__init__(**kwargs)
        self.n_ref = int(n_ref)

    def call(self, x):
        return x[self.n_ref:]

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "n_ref": self.n_ref}


@keras.saving.register_keras_serializable(package="gan_cli")
class VirtualBatchNormalization(keras.layers.Layer):
    """Normalisation with the statistics of the reference batch only (the first ``n_ref`` rows).

    Input ``h`` ``(n_ref + B, ..., C)``; ``mu``, ``var`` = mean and (biased) variance of
    ``h[:n_ref]`` over every axis but the last (channels); output
    ``gamma * (h - mu) / sqrt(var + epsilon) + beta`` for all rows, reference rows included (the next
    VBN layer needs their activations). The statistics are recomputed through the current weights at
    every call, in training and inference alike. This is Salimans et al.'s reference-batch form; their
    "virtual" variant also mixes the example itself into the statistics (weight 1/(n_ref + 1)), which
    we leave out so that a row's output is a function of that row and the fixed reference batch.
    """

    def __init__(self, n_ref: int, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.n_ref, self.epsilon = int(n_ref), float(epsilon)

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros")

    def call(self, h):
        mean, var = ops.moments(h[: self.n_ref], axes=list(range(len(h.shape) - 1)))  # per channel
        scale = ops.cast(self.gamma, h.dtype) * ops.rsqrt(var + self.epsilon)
        # gamma (h - mean) / sqrt(var + eps) + beta, as one multiply-add on the full tensor
        return h * scale + (ops.cast(self.beta, h.dtype) - mean * scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "n_ref": self.n_ref, "epsilon": self.epsilon}
