"""The discriminator's feature layer, read by feature matching (Salimans et al. 2016).

Every discriminator builder names the output of its last hidden layer ``features`` (an
``Identity`` layer for mlp/maxout and csm_mlp, the ``Flatten`` before the logits for dcgan):
``(B', F)`` for a batch of ``B'`` discriminator inputs (``B' = B / model.pack`` with PacGAN).
Layers between it and the logits (e.g. minibatch discrimination) come after it.
"""

from __future__ import annotations

import keras

from gan_cli.core.errors import ConfigError

FEATURES = "features"


def feature_model(discriminator: keras.Model) -> keras.Model:
    """A model sharing ``discriminator``'s layers and weights: inputs -> ``[features (B', F), logits (B', 1)]``.

    Raises ConfigError when the discriminator has no layer named ``features`` (an MLP without
    hidden layers).
    """
    try:
        features = discriminator.get_layer(FEATURES).output
    except ValueError:
        raise ConfigError(f"loss.feature_matching needs a discriminator with a hidden layer (a layer named "
                          f"'{FEATURES}'); '{discriminator.name}' has none: give model.discriminator.hidden "
                          "at least one size or set loss.feature_matching=0") from None
    return keras.Model(discriminator.inputs, [features, discriminator.output], name=f"{discriminator.name}_features")
