"""Random streams: one id per random purpose, all in one place, so that no two purposes share numbers.

A run is a deterministic function of its config: every random number comes from a generator keyed on
``train.seed`` and one of the ids below, never from global random state.
"""

# The training step's stateless TensorFlow streams (gan_cli.training.gan.GAN._key): the key of purpose p
# is ``(train.seed * STATELESS_PURPOSES + p, slot)``, the slot counting the round's draws.
STATELESS_PURPOSES = 8
LATENT = 0       # the generator's noise
LABELS = 1       # fake labels of conditional models
GP_EPSILON = 2   # WGAN-GP interpolation weights
AE_NOISE = 7     # GN-GAN's auto-encoder step (gan_cli.training.gngan)

# numpy generators seeded with ``train.seed + offset``
EVAL_NOISE = 12345          # the evaluation batch, the same at every evaluation (gan_cli.callbacks.monitor)
REFERENCE_NOISE = 7919      # virtual batch norm's generator reference batch (gan_cli.models.reference)
REFERENCE_ROWS = 104729     # virtual batch norm's real reference rows (gan_cli.models.reference)
