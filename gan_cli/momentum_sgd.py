"""SGD whose momentum rises linearly over training (Goodfellow et al. 2014: 0.5 -> 0.7)."""

from __future__ import annotations

import keras
from keras import ops


class RampedMomentumSGD(keras.optimizers.SGD):
    """SGD with momentum mu_t = mu_0 + (mu_1 - mu_0) min(1, t / T), t = this optimizer's update count.

    Update (Keras' SGD form): m <- mu_t m - lr g; w <- w + m (Nesterov: w <- w + mu_t m - lr g).
    """

    def __init__(self, learning_rate: float, momentum: float = 0.5, momentum_final: float = 0.7,
                 momentum_steps: int = 1, nesterov: bool = False, **kwargs):
        # a non-zero start keeps Keras building the momentum slots
        super().__init__(learning_rate=learning_rate, momentum=max(float(momentum), 1e-12),
                         nesterov=nesterov, **kwargs)
        self.momentum_start, self.momentum_final = float(momentum), float(momentum_final)
        self.momentum_steps = max(int(momentum_steps), 1)

    def current_momentum(self, dtype="float32"):
        t = ops.cast(self.iterations, dtype)
        frac = ops.minimum(ops.cast(1.0, dtype), t / float(self.momentum_steps))
        return self.momentum_start + (self.momentum_final - self.momentum_start) * frac

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
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
                "momentum_steps": self.momentum_steps}
