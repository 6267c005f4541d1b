"""Custom Keras layers: maxout (Goodfellow et al. 2013, seed 003)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="gan_cli")
class Maxout(keras.layers.Layer):
    """Maxout units: ``units`` outputs, each the max over ``pieces`` affine pieces.

    Input ``(B, d)`` -> output ``(B, units)``; h_i(x) = max_j (x W_ij + b_ij).
    """

    def __init__(self, units: int, pieces: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.units, self.pieces = int(units), int(pieces)
        self.dense = keras.layers.Dense(self.units * self.pieces)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        y = self.dense(x)
        y = ops.reshape(y, (-1, self.units, self.pieces))
        return ops.max(y, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "pieces": self.pieces}
