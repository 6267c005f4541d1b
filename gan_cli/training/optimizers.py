"""Optimizer configs -> Keras optimizers (one per network; never shared between G and D)."""

from __future__ import annotations

from typing import Any, Mapping

from gan_cli.config.optimizer import OPTIMIZERS
from gan_cli.core.errors import ConfigError

def build_optimizer(cfg: Mapping[str, Any], fused: bool = True):
    """A fresh Keras optimizer from a node like ``{name: adam, lr: 2e-4, beta_1: 0.5}``.

    SGD with ``momentum_final`` and ``momentum_steps`` set ramps its momentum linearly from
    ``momentum`` to ``momentum_final`` over that many of its own updates (Goodfellow et al.
    2014: 0.5 rising to 0.7; ``momentum_epochs`` is turned into ``momentum_steps`` by
    ``config.resolve``, which knows the data set's size). SGD with ``lr_decay`` divides its
    learning rate by that factor at every update, down to ``lr_min`` (the authors' 1.000004, 1e-6). RMSprop is ``FusedRMSprop`` (Keras's rule and state, one TensorFlow
    kernel per weight) unless ``fused`` is false (``train.fast=false``: plain Keras).
    """
    import keras

    cls_name, allowed = OPTIMIZERS[cfg["name"]]
    kwargs = {k: v for k, v in cfg.items() if k in allowed and v is not None
              and k not in ("lr", "momentum_final", "momentum_steps", "momentum_epochs", "lr_decay", "lr_min")}
    if cfg["name"] == "sgd" and (cfg.get("momentum_final") is not None or cfg.get("lr_decay") is not None):
        from gan_cli.training.momentum_sgd import RampedMomentumSGD

        if cfg.get("momentum_final") is not None and cfg.get("momentum_steps") is None:
            raise ConfigError("optimizer momentum_epochs is resolved into momentum_steps by gan_cli.config.resolve.resolve; "
                              "set momentum_steps when building an optimizer directly")
        momentum = float(cfg.get("momentum") or 0.0)
        final = cfg.get("momentum_final")
        return RampedMomentumSGD(learning_rate=float(cfg["lr"]), momentum=momentum,
                                 momentum_final=momentum if final is None else float(final),
                                 momentum_steps=int(cfg.get("momentum_steps") or 1),
                                 lr_decay=float(cfg.get("lr_decay") or 1.0), lr_min=float(cfg.get("lr_min") or 0.0),
                                 **{k: v for k, v in kwargs.items() if k != "momentum"})
    if cfg["name"] == "rmsprop" and fused:
        from gan_cli.fast.fused_rmsprop import FusedRMSprop

        return FusedRMSprop(learning_rate=float(cfg["lr"]), **kwargs)
    return getattr(keras.optimizers, cls_name)(learning_rate=float(cfg["lr"]), **kwargs)
