"""Losses layer: adversarial losses, penalties and GN-GAN's normalised losses (pure functions of tensors).

``FAMILIES`` names every loss family ``loss.name`` may select, with the properties that the config
rules (gan_cli.config) and the training step read; ``adversarial.LOSSES`` holds their functions.
This module imports no TensorFlow, so configs are checked without it.
"""

# name -> properties: label_smoothing (loss.label_smoothing applies), clips_weights (WGAN's critic
# weight clipping after each update), gradient_penalty (WGAN-GP)
FAMILIES: dict[str, dict[str, bool]] = {
    "gan": {"label_smoothing": True},
    "nsgan": {"label_smoothing": True},
    "mlgan": {"label_smoothing": True},
    "lsgan": {"label_smoothing": True},
    "wgan": {"clips_weights": True},
    "wgan_gp": {"gradient_penalty": True},
    "hinge": {},
    "gngan": {},
}
