"""Speed tricks behind one switch, ``train.fast`` (on by default).

Each trick computes the same numbers as a plain counterpart, only faster (tests/test_fast.py
trains the same run both ways; each trick has its own equivalence test):

* ``activations``: ReLU / LeakyReLU that differentiate from their outputs (custom gradient),
  against ``keras.layers.ReLU`` / ``LeakyReLU``;
* ``conv_max_pool``: the CSM critic's last convolutions + LeakyReLU + global max pool as one layer
  with a sparse backward pass (custom gradient), against the Keras layers;
* ``fused_rmsprop``: RMSprop through TensorFlow's fused ``ResourceApplyRMSProp`` kernel, against
  ``keras.optimizers.RMSprop``;
* the compiled step's shape (``GAN.train_step``): the round's ``n_critic`` discriminator updates
  unrolled in the graph for small networks (against a graph loop), and the round's fake batches
  from one generator call for large generators (against one call per update).

The thresholds below pick where a trick pays; the measurements behind them are in
docs/performance.md. ``train.fast=false`` builds and trains with the plain versions only.
Exported generators never contain these layers (gan_cli.run.export rebuilds them from plain
Keras layers).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# The critic updates of a round are unrolled in the graph when G and D together have fewer weights
# than this and n_critic is at most UNROLL_MAX_N_CRITIC: for small networks a graph loop's
# per-iteration overhead is a measurable share of the step, for large ones unrolling only makes
# tracing slower.
UNROLL_MAX_PARAMS = 1_000_000
UNROLL_MAX_N_CRITIC = 10
# A generator with at least this many weights makes a round's n_critic fake batches in one call:
# one (n_critic * B)-row pass reads its weights once instead of n_critic times; for small generators
# the per-update calls overlap with the previous update's critic work and are faster.
BATCHED_FAKES_MIN_PARAMS = 1_000_000

_enabled = True


def enabled() -> bool:
    """Whether networks built now use the fast layers (``train.fast``)."""
    return _enabled


@contextlib.contextmanager
def switch(on: bool) -> Iterator[None]:
    """Build networks with (``on``) or without the fast layers inside this block."""
    global _enabled
    saved, _enabled = _enabled, bool(on)
    try:
        yield
    finally:
        _enabled = saved


def unroll_critic(n_params: int, n_critic: int, fast: bool = True) -> bool:
    """Whether a round runs its ``n_critic`` discriminator updates unrolled (else a graph loop)."""
    return n_critic <= 1 or (fast and n_params < UNROLL_MAX_PARAMS and n_critic <= UNROLL_MAX_N_CRITIC)


def batched_fakes(generator_params: int, rows_independent: bool, fast: bool = True) -> bool:
    """Whether a round makes its fake batches in one generator call (``GAN.critic_fakes``)."""
    return fast and rows_independent and generator_params >= BATCHED_FAKES_MIN_PARAMS


def relu():
    """ReLU layer: differentiates from its output when fast (same values and gradients)."""
    import keras

    from gan_cli.fast.activations import ReLUFromOutput

    return ReLUFromOutput() if _enabled else keras.layers.ReLU()


def leaky_relu(negative_slope: float = 0.2, **kwargs):
    """LeakyReLU layer: differentiates from its output when fast (same values and gradients)."""
    import keras

    from gan_cli.fast.activations import LeakyReLUFromOutput

    cls = LeakyReLUFromOutput if _enabled else keras.layers.LeakyReLU
    return cls(negative_slope=negative_slope, **kwargs)
