"""SGD whose momentum rises linearly and whose learning rate decays exponentially over training
(Goodfellow et al. 2014: momentum 0.5 -> 0.7, lr divided by 1.000004 per update down to 1e-6)."""

from __future__ import annotations

import math

import keras
from keras import ops


class RampedMomentumSGD(keras.optimizers.SGD):
    """SGD with momentum mu_t = mu_0 + (mu_1 - mu_0) min(1, t / T), t = this optimizer's update count,
    and learning rate lr_t = max(lr / lr_decay^t, lr_min) (pylearn2's ExponentialDecay, which the
    authors' mnist.yaml uses; lr_decay 1: constant).

    Update (Keras' SGD form): m <- mu_t m - lr_t g; w <- w + m (Nesterov: w <- w + mu_t m - lr_t g).
    The decay is applied inside the update rather than through a Keras LearningRateSchedule, so
    ``learning_rate`` stays the optimizer variable that checkpoints store and that
    ``train.on_nan=rollback`` lowers (a schedule has neither).
    """

    def __init__(self, learning_rate: float, momentum: float = 0.5, momentum_final: float = 0.7,
                 momentum_steps: int = 1, nesterov: bool = False, lr_decay: float = 1.0, lr_min: float = 0.0,
                 **kwargs):
        # a non-zero start keeps Keras building the momentum slots
        super().__init__(learning_rate=learning_rate, momentum=max(float(momentum), 1e-12),
                         nesterov=nesterov, **kwargs)
        self.momentum_start, self.momentum_final = float(momentum), float(momentum_final)
        self.momentum_steps = max(int(momentum_steps), 1)
        self.lr_decay, self.lr_min = float(lr_decay), float(lr_min)

    def current_momentum(self, dtype="float32"):
        t = ops.cast(self.iterations, dtype)
        frac = ops.minimum(ops.cast(1.0, dtype), t / float(self.momentum_steps))
        return self.momentum_start + (self.momentum_final - self.momentum_start) * frac

    def current_learning_rate(self, learning_rate, dtype="float32"):
        """max(lr / lr_decay^t, lr_min) for the base rate ``learning_rate``."""
        lr = ops.cast(learning_rate, dtype)
        if self.lr_decay == 1.0:
            return lr
        t = ops.cast(self.iterations, dtype)
        return ops.maximum(lr * ops.exp(-t * math.log(self.lr_decay)), ops.cast(self.lr_min, dtype))

    def update_step(self, gradient, variable, learning_rate):
        lr = self.current_learning_rate(learning_rate, variable.dtype)
        grad = ops.cast(gradient, variable.dtype)
        mu = self.current_momentum(variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        self.assign(m, ops.subtract(ops.multiply(m, mu), ops.multiply(grad, lr)))
        if self.nesterov:
            self.assign_add(variable, ops.subtract(ops.multiply(m, mu), ops.multiply(grad, lr)))
        else:
            self.assign_add(variable, m)

    def get_config(self):
        return {**super().get_config(), "momentum_final": self.momentum_final,
                "momentum_steps": self.momentum_steps, "lr_decay": self.lr_decay, "lr_min": self.lr_min}
