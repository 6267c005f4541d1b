"""Losses layer: adversarial losses, penalties and GN-GAN's normalised losses."""
