"""RMSprop whose update is TensorFlow's fused ``ResourceApplyRMSProp`` kernel: one op per weight.

Keras's ``RMSprop.update_step`` builds about ten elementwise ops per weight (square, scale, add, assign,
sqrt, divide, ...). On a small network the round is dominated by such tiny ops rather than by arithmetic,
and a WGAN round runs the critic's optimizer ``n_critic`` times (the gain is measured in docs/performance.md).

Same rule, same state: for gradient ``g`` (any shape, cast to the weight's dtype), ``rho``, ``lr``, ``eps``::

    v <- rho v + (1 - rho) g^2          (Keras's "velocity", kept in Keras's own slot variable)
    m <- momentum m + lr g / sqrt(v + eps)
    w <- w - m

which is Keras's RMSprop (non-centred) with ``m`` its momentum slot when ``momentum > 0``. With ``momentum
0`` the kernel still needs an ``m`` buffer: a scratch variable per weight, outside ``optimizer.variables``
(so checkpoints hold exactly Keras's state) and rewritten before every read. Centred RMSprop and updates under
a ``tf.distribute`` strategy use Keras's own ops.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="gan_cli")
class FusedRMSprop(keras.optimizers.RMSprop):
    """``keras.optimizers.RMSprop`` (same arguments, variables and checkpoints) with a one-kernel update."""

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        import tensorflow as tf

        self._scratch = []  # momentum 0: the kernel's m buffer per weight (build order = variable index)
        if self.momentum == 0 and not self.centered and not tf.distribute.has_strategy():
            with tf.init_scope():  # plain tf.Variables: not Keras-tracked, so not in optimizer.variables
                self._scratch = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="rmsprop_scratch")
                                 for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        from gan_cli.core.tf_context import tf_variable

        index = self._get_variable_index(variable)
        if self.centered or tf.distribute.has_strategy() or not (self.momentum > 0 or self._scratch):
            return super().update_step(gradient, variable, learning_rate)
        momentum = self._momentums[index] if self.momentum > 0 else self._scratch[index]
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyRMSProp(
            var=tf_variable(variable).handle, ms=tf_variable(self._velocities[index]).handle,
            mom=tf_variable(momentum).handle, lr=tf.cast(learning_rate, dtype), rho=tf.cast(self.rho, dtype),
            momentum=tf.cast(self.momentum, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype))
