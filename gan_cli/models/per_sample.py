"""Whether a network maps each row of its batch independently of the others, deterministically.

``GAN.train_step`` runs the generator once for all ``n_critic`` discriminator updates of a round
(``(n_critic * B)`` rows instead of ``n_critic`` calls of ``B``) when that gives the same samples: every
layer must compute row ``i`` of its output from row ``i`` of its input alone (no batch statistics,
minibatch features or reference batches) and draw no random numbers in training (no dropout). A
whitelist of layer types, so that a new or custom layer keeps the per-update calls until listed here.
``GAN.batched_fakes`` also asks for a generator large enough for the one call to pay
(``gan_cli.fast.BATCHED_FAKES_MIN_PARAMS``).
"""

from __future__ import annotations

import keras

from gan_cli.fast.activations import ReLUFromOutput
from gan_cli.fast.conv_max_pool import ConvLeakyMaxPool
from gan_cli.models.csm import CsmOutputTransform
from gan_cli.models.layers import Maxout

PER_SAMPLE_LAYERS: tuple[type, ...] = (
    keras.layers.InputLayer, keras.layers.Dense, keras.layers.Activation, keras.layers.LeakyReLU,
    keras.layers.ReLU, keras.layers.LayerNormalization, keras.layers.Reshape, keras.layers.Flatten,
    keras.layers.Concatenate, keras.layers.Add, keras.layers.Dot, keras.layers.Embedding,
    keras.layers.CategoryEncoding, keras.layers.Conv2D, keras.layers.Conv2DTranspose,
    keras.layers.UpSampling2D, keras.layers.Identity, keras.layers.GlobalMaxPooling2D,
    Maxout, CsmOutputTransform, ConvLeakyMaxPool, ReLUFromOutput,  # LeakyReLUFromOutput is a LeakyReLU
)

# nested functional and sequential models: their layers are checked one by one
_CONTAINERS = ("Functional", "Sequential")


def rows_independent(model: keras.Model) -> bool:
    """True when every layer of ``model`` (nested ones included) is one of ``PER_SAMPLE_LAYERS``."""
    return all(isinstance(layer, PER_SAMPLE_LAYERS) or type(layer).__name__ in _CONTAINERS
               for layer in _all_layers(model))


def _all_layers(model):
    """The layers of ``model``, and those of nested models, depth first."""
    for layer in model.layers:
        yield layer
        if type(layer).__name__ in _CONTAINERS:
            yield from _all_layers(layer)
