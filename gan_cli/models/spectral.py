"""Spectral normalisation of discriminator layers (Miyato et al. 2018): ``model.discriminator.spectral_norm``.

``SpectralNorm(layer)`` wraps a Dense/Conv layer with kernel ``W`` (reshaped to ``(fan_in, units)``).
In every training call it runs one power iteration on the stored vector ``u`` ``(1, units)``::

    v <- normalise(u W^T),  u <- normalise(v W),  sigma = v W u^T  (~ the largest singular value of W)

and stores ``W / sigma`` as the layer's kernel and the new ``u`` (a non-trainable weight, so it is
checkpointed with the discriminator). This is Keras' ``SpectralNormalization`` scheme (the normalised
kernel is what the optimizer then updates and what WGAN clipping clips), minus its guard for an
all-zero kernel: that guard is a ``tf.cond``, and differentiating through it again and again (the
unrolled look-ahead, gradient penalties) made tracing the training step several times slower. Our
kernels start random, never all zero. Outside training the stored kernel is used as it is.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="gan_cli")
class SpectralNorm(keras.layers.SpectralNormalization):
    """``keras.layers.SpectralNormalization`` without the all-zero-kernel ``cond`` (see the module docstring)."""

    def call(self, inputs, training=False):
        if training:
            vector_u, kernel = self.normalized_weights()
            self.vector_u.assign(vector_u)
            self.kernel.assign(kernel)
        return ops.cast(self.layer(inputs), inputs.dtype)


def spectral(layer, enabled: bool = True):
    """``layer`` wrapped in ``SpectralNorm`` when ``enabled``, else ``layer`` itself."""
    return SpectralNorm(layer) if enabled else layer
