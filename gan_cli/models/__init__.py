"""Model builders by ``model.name`` (``get_builder(name)``).

Every builder has the signature ``builder(cfg, data, latent_dim, conditional) -> (G, D)``:

* ``G`` maps ``z`` of shape ``(B, latent_dim)`` (plus ``y`` of shape ``(B,)`` int32 when
  ``conditional``) to samples ``(B, *data.sample_shape)`` in model space; the layer that the data's
  encoding needs (``gan_cli.models.output.output_transform``), if any, is its last layer.
* ``D`` maps samples ``(B, *data.sample_shape)`` (plus ``y`` when conditional) to raw
  logits ``(B, 1)`` (linear output: losses apply sigmoid where their math needs it).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from gan_cli.core.errors import ConfigError

# name -> "module:function"; imported lazily so the CLI stays fast.
MODELS: dict[str, str] = {
    "mlp": "gan_cli.models.mlp:build_mlp",
    "maxout": "gan_cli.models.mlp:build_mlp",
    "csm_mlp": "gan_cli.models.csm:build_csm_models",
    "csm_physics": "gan_cli.models.csm_physics:build_csm_physics",
    "dcgan": "gan_cli.models.conv:build_dcgan",
}


def get_builder(name: str) -> Callable[..., Any]:
    """The builder registered as ``name``; raises ConfigError listing the valid names."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; valid: {', '.join(sorted(MODELS))} (or auto)")
    module, func = MODELS[name].split(":")
    return getattr(importlib.import_module(module), func)
