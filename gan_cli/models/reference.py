"""Virtual batch normalisation's reference batches: build-time helpers and the one-time fill.

A model built with VBN (``model.generator.batch_norm=virtual`` etc.) has a ``ReferenceBatch`` layer
at each input (see ``gan_cli.models.layers``). ``fill_reference_batches`` draws their contents once,
right after the networks are built and before training starts:

* generator: ``n_ref`` latent vectors from the run's latent distribution (N(0, I) or U[-1, 1]),
  seeded by ``train.seed``; labels (conditional models) cycle through the classes 0, 1, ..., K-1, 0, ...
* discriminator: ``n_ref`` real training samples (model space) drawn with ``data.real_samples`` and a
  seed derived from ``train.seed``, with their labels; with PacGAN packing (``model.pack=m``) ``n_ref *
  m`` samples packed into ``n_ref`` rows exactly as ``GAN.pack_samples`` packs a batch.

The rows are weights of the networks, so checkpoints store them and a restore (resume, ``gan sample``,
``gan evaluate``) overwrites this draw with the one training used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gan_cli.core import streams
from gan_cli.models.layers import DropReference, ReferenceBatch

DEFAULT_REF_SIZE = 64


def prepend(tensor, n_ref: int, role: str, name: str):
    """``tensor`` ``(B, ...)`` -> ``(n_ref + B, ...)``: a stored reference batch in front (``n_ref`` 0: unchanged)."""
    return ReferenceBatch(n_ref, role, name=name)(tensor) if n_ref else tensor


def drop(tensor, n_ref: int, name: str):
    """Remove the reference rows again (``n_ref`` 0: unchanged)."""
    return DropReference(n_ref, name=name)(tensor) if n_ref else tensor


def reference_layers(model) -> dict[str, ReferenceBatch]:
    """``role -> ReferenceBatch`` layer of ``model`` (empty without VBN)."""
    return {layer.role: layer for layer in model.layers if isinstance(layer, ReferenceBatch)}


def fill_reference_batches(generator, discriminator, data: Any, latent_distribution: str, seed: int,
                           pack: int = 1) -> None:
    """Draw and store the reference batches of ``generator`` and ``discriminator`` (no-op without VBN)."""
    g_layers, d_layers = reference_layers(generator), reference_layers(discriminator)
    if "z" in g_layers:
        z_layer = g_layers["z"]
        n, latent_dim = z_layer.n_ref, int(z_layer.reference.shape[-1])
        rng = np.random.default_rng(seed + streams.REFERENCE_NOISE)
        if latent_distribution == "uniform":
            z = rng.uniform(-1.0, 1.0, (n, latent_dim))
        else:
            z = rng.standard_normal((n, latent_dim))
        z_layer.reference.assign(z.astype(np.float32))
        if "y" in g_layers:
            g_layers["y"].reference.assign((np.arange(n) % max(int(data.num_classes), 1)).astype(np.int32))
    if "x" in d_layers:
        x_layer = d_layers["x"]
        n = x_layer.n_ref
        x, y = data.real_samples(n * pack, seed + streams.REFERENCE_ROWS)
        x = np.asarray(x, np.float32).reshape((n, *x_layer.reference.shape[1:]))  # packs of `pack` rows
        x_layer.reference.assign(x)
        if "y" in d_layers and y is not None:
            d_layers["y"].reference.assign(np.asarray(y, np.int32))
