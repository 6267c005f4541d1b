"""ReLU and LeakyReLU layers whose gradients cost less under double backpropagation.

Both compute exactly what ``keras.layers.ReLU`` / ``keras.layers.LeakyReLU`` compute, with the same
gradients and the same gradients of gradients. Two things differ in the graph TensorFlow builds:

* **The gradient is read from the output.** For a slope ``a`` in ``[0, 1)`` the output has the input's
  sign, so ``ReluGrad(g, y)`` / ``LeakyReluGrad(g, y)`` with the output ``y`` is the usual gradient. The
  pre-activation is then not needed by the backward pass, and grappler's remapper can fuse
  ``Conv2D``/``MatMul -> BiasAdd -> LeakyRelu`` into one oneDNN kernel on a CPU (it cannot when the
  backward pass reads the pre-activation).
* **Second-order gradients stop at the slope mask.** The activation's derivative is the step function
  ``1[x > 0] + a 1[x <= 0]``, whose own derivative is zero (almost everywhere; TensorFlow defines it as
  zero). TensorFlow's gradient of ``ReluGrad`` nevertheless returns ``zeros_like(features)`` for the
  mask's input, and autodiff pushes those zeros back through the whole forward pass: in a WGAN-GP or R1
  critic update, one extra weight-gradient and one extra input-gradient product per layer on the
  penalised batch, all multiplying zeros. Here the mask is read from ``stop_gradient(y)``, so that chain
  is never built. On the ring benchmark's critic (2-128-128-1 ReLU, batch 256, WGAN-GP) the graph loses
  3 of 33 matrix products per critic update.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="gan_cli")
class ReLUFromOutput(keras.layers.Layer):
    """``max(x, 0)``, any shape in and out; gradient ``ReluGrad(g, stop_gradient(y))`` (module docstring)."""

    def call(self, x):
        import tensorflow as tf

        @tf.custom_gradient
        def relu(x):
            y = tf.nn.relu(x)
            return y, lambda g: tf.raw_ops.ReluGrad(gradients=g, features=tf.stop_gradient(y))

        return relu(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def plain(self, x):
        """The same function from stock Keras (``gan export``: exported models hold no gan_cli layer)."""
        return keras.layers.ReLU(name=self.name)(x)


@keras.saving.register_keras_serializable(package="gan_cli")
class LeakyReLUFromOutput(keras.layers.LeakyReLU):
    """``keras.layers.LeakyReLU`` (any shape in and out) with the gradient
    ``LeakyReluGrad(g, stop_gradient(y))`` (module docstring). A slope outside ``[0, 1)`` falls back to
    the Keras layer, whose output need not have the input's sign."""

    def call(self, x):
        import tensorflow as tf

        slope = float(self.negative_slope)
        if not 0.0 <= slope < 1.0:
            return super().call(x)

        @tf.custom_gradient
        def leaky(x):
            y = tf.nn.leaky_relu(x, slope)
            return y, lambda g: tf.raw_ops.LeakyReluGrad(gradients=g, features=tf.stop_gradient(y), alpha=slope)

        return leaky(x)

    def plain(self, x):
        """The same function from stock Keras (``gan export``: exported models hold no gan_cli layer)."""
        return keras.layers.LeakyReLU(negative_slope=float(self.negative_slope), name=self.name)(x)
