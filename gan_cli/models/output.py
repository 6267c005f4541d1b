"""The generator's last layer that a data set's encoding needs (e.g. CSM eigenvector normalisation)."""

from __future__ import annotations


def output_transform(data):
    """A Keras layer applied to the generator's raw ``(B, *sample_shape)`` output, or None."""
    from gan_cli.models.csm import csm_output_transform

    return csm_output_transform(data)
