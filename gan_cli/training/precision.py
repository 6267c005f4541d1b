"""Mixed precision (``train.mixed_precision``): float16 or bfloat16 compute for G and D.

``train.mixed_precision``: ``false`` (float32), ``float16``, ``bfloat16``, or ``true`` = the device's fast
type: ``float16`` on a GPU (tensor cores), ``bfloat16`` on a CPU (``compute_dtype``). On a CPU with
bfloat16 instructions (Intel AMX / AVX512_BF16) oneDNN runs bfloat16 matmuls and convolutions several
times faster than float32 (measured in docs/performance.md).

What changes with it on:

* both networks are built under Keras's ``mixed_float16`` / ``mixed_bfloat16`` policy: float32
  variables, half-width matmuls/convolutions;
* the numerically delicate ends stay float32 (``float32_ends``): the critic's last weighted layer
  (its logits ``(B, 1)``) and every layer after the generator's last weighted layer (reshape and
  the dataset's output transform, e.g. the CSM eigenvector normalisation, whose ``eps**2`` would
  underflow in float16). So logits, generated samples and every loss are float32;
* float16 only: each optimizer is wrapped in ``keras.optimizers.LossScaleOptimizer`` (dynamic loss
  scaling): the training step multiplies each loss by ``optimizer.scale_loss`` inside its gradient
  tape, and the wrapper divides the gradients by the same scale before the update (skipping an
  update whose gradients overflowed and halving the scale; doubling it after 2000 finite steps).
  bfloat16 has float32's exponent range and needs no loss scaling.

Where the type is emulated (float16 on a CPU; bfloat16 on a CPU without bfloat16 instructions)
it is usually slower than float32; ``warning`` says so (training still runs).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic, which oneDNN uses
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def compute_dtype(setting, gpu: bool | None = None) -> str | None:
    """The half-precision compute type of ``train.mixed_precision=setting`` (None: float32 throughout).
    ``true`` -> ``float16`` on a GPU, ``bfloat16`` on a CPU; ``gpu`` None = ask TensorFlow (its physical
    devices: that does not start its runtime, which a distribution strategy must still be able to configure).
    ``config.resolve`` stores the result, so a run folder names the type it trained in."""
    if setting is False or setting is None:
        return None
    if setting is True:
        if gpu is None:
            import tensorflow as tf

            gpu = bool(tf.config.list_physical_devices("GPU"))
        return "float16" if gpu else "bfloat16"
    return str(setting)


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has native bfloat16 arithmetic (``BF16_CPU_FLAGS`` in ``/proc/cpuinfo``'s flags;
    False where that file is missing)."""
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo").read()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


@contextlib.contextmanager
def policy(dtype: str | None) -> Iterator[None]:
    """Build layers under ``mixed_<dtype>`` while inside (when ``dtype`` is set); restore the previous global
    policy after."""
    if not dtype:
        yield
        return
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(f"mixed_{dtype}")
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


def loss_scaled(optimizer, dtype: str | None):
    """``optimizer`` wrapped for dynamic loss scaling when ``dtype`` is float16 (the train step calls
    ``optimizer.scale_loss``); unchanged for bfloat16 and float32."""
    if dtype != "float16":
        return optimizer
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer)


def warning(dtype: str | None, gpu: bool | None = None, bf16_cpu: bool | None = None) -> str | None:
    """A warning line when ``dtype`` is emulated on this machine (float16 without a GPU, bfloat16 on a CPU
    without bfloat16 instructions), else None. ``gpu`` / ``bf16_cpu`` None = ask TensorFlow / the CPU."""
    if gpu is None:
        import tensorflow as tf

        gpu = bool(tf.config.list_physical_devices("GPU"))
    if not dtype or gpu:
        return None
    if dtype == "float16":
        return ("warning: train.mixed_precision=float16 is meant for GPUs; on this CPU-only machine float16 is "
                "emulated and usually slower than float32 (set train.mixed_precision=false, or true for bfloat16)")
    if not (cpu_has_bf16() if bf16_cpu is None else bf16_cpu):
        return ("warning: train.mixed_precision=bfloat16: this CPU has no bfloat16 instructions (AMX / "
                "AVX512_BF16), so bfloat16 is emulated and usually slower than float32 "
                "(set train.mixed_precision=false)")
    return None
