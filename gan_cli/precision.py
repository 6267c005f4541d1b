"""Mixed precision (``train.mixed_precision=true``): float16 compute for G and D on a GPU.

What changes with it on:

* both networks are built under Keras's ``mixed_float16`` policy: float32 variables, float16
  matmuls/convolutions (tensor cores on a GPU);
* the numerically delicate ends stay float32 (``float32_ends``): the critic's last weighted layer
  (its logits ``(B, 1)``) and every layer after the generator's last weighted layer (reshape and
  the dataset's output transform, e.g. the CSM eigenvector normalisation, whose ``eps**2`` would
  underflow in float16). So logits, generated samples and every loss are float32;
* each optimizer is wrapped in ``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling): the
  training step multiplies each loss by ``optimizer.scale_loss`` inside its gradient tape, and the
  wrapper divides the gradients by the same scale before the update (skipping an update whose
  gradients overflowed and halving the scale; doubling it after 2000 finite steps).

On a CPU float16 arithmetic is emulated and slow; ``cpu_warning`` says so (training still runs).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

MIXED_POLICY = "mixed_float16"


@contextlib.contextmanager
def policy(mixed: bool) -> Iterator[None]:
    """Build layers under ``mixed_float16`` while inside (when ``mixed``); restore the previous global policy after."""
    if not mixed:
        yield
        return
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_POLICY)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _weighted(layer) -> bool:
    return bool(layer.weights)


def float32_ends(generator, discriminator) -> None:
    """Make the critic's logits layer (its last weighted layer and anything after it) and the layers after the
    generator's last weighted layer compute in float32 (the generator's last layer if nothing follows it)."""
    d_layers = list(discriminator.layers)
    last_d = max((i for i, layer in enumerate(d_layers) if _weighted(layer)), default=len(d_layers) - 1)
    for layer in d_layers[last_d:]:
        layer.dtype_policy = "float32"
    g_layers = list(generator.layers)
    last_g = max((i for i, layer in enumerate(g_layers) if _weighted(layer)), default=len(g_layers) - 1)
    for layer in g_layers[last_g + 1:] or g_layers[-1:]:
        layer.dtype_policy = "float32"


def loss_scaled(optimizer):
    """``optimizer`` wrapped for dynamic loss scaling (the train step calls ``optimizer.scale_loss``)."""
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer)


def cpu_warning() -> str | None:
    """A warning line when mixed precision is asked for without a GPU, else None."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return None
    return ("warning: train.mixed_precision=true is meant for GPUs; on this CPU-only machine float16 is emulated "
            "and usually slower than float32 (set train.mixed_precision=false)")
