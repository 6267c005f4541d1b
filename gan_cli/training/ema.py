"""Exponential moving average of the generator's weights (``train.g_ema``), used for sampling and evaluation.

After every generator update ``n`` (0-based, counted over the whole run: ``round * n_gen + j``)::

    d_n = min(decay, (1 + n) / (10 + n))          # warm-up (tf.train.ExponentialMovingAverage's num_updates)
    ema <- d_n * ema + (1 - d_n) * w               # trainable weights
    ema <- w                                       # non-trainable state (batch-norm statistics, VBN reference)

The warm-up keeps the average from being dominated by the random initial weights early on. The
shadow generator starts as a copy of G; it is checkpointed (``checkpoint.state_groups``, prefix
``g_ema``), so a resumed run continues the same average.
"""

from __future__ import annotations

import keras
import numpy as np


def ema_decay(decay: float, n):
    """Effective decay of update ``n`` (a Python/NumPy number or a tensor): ``min(decay, (1 + n) / (10 + n))``."""
    if isinstance(n, (int, float, np.integer, np.floating)):
        return min(float(decay), (1.0 + n) / (10.0 + n))
    n = keras.ops.cast(n, "float32")
    return keras.ops.minimum(float(decay), (1.0 + n) / (10.0 + n))


def make_ema_generator(generator: keras.Model) -> keras.Model:
    """A structural copy of ``generator`` holding the same weight values (the shadow network)."""
    shadow = keras.models.clone_model(generator)
    shadow.set_weights(generator.get_weights())
    return shadow


def update_ema(shadow: keras.Model, generator: keras.Model, decay: float, n) -> None:
    """One in-graph EMA step of ``shadow`` towards ``generator``'s weights for generator update ``n``."""
    from gan_cli.training.distribute import assign_everywhere  # on every replica's copy under tf.distribute

    d = ema_decay(decay, n)
    for e, w in zip(shadow.weights, generator.weights):
        if w.trainable:
            assign_everywhere([e], lambda v, w=w: d * v + (1.0 - d) * keras.ops.cast(w, v.dtype))
        else:
            assign_everywhere([e], lambda v, w=w: keras.ops.cast(w, v.dtype))
