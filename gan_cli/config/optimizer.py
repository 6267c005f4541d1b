"""Optimizer config rules: the optimizers a config may name, their keys and ranges."""

from __future__ import annotations

from typing import Any, Mapping

from gan_cli.config.checks import number
from gan_cli.core.errors import ConfigError

# name -> (Keras class name, allowed config keys besides `name`)
OPTIMIZERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "adam": ("Adam", ("lr", "beta_1", "beta_2", "epsilon")),
    "rmsprop": ("RMSprop", ("lr", "rho", "momentum", "epsilon")),
    "sgd": ("SGD", ("lr", "momentum", "nesterov", "momentum_final", "momentum_steps", "momentum_epochs",
                    "lr_decay", "lr_min")),
}
# keys whose value must lie in [0, 1)
_UNIT_INTERVAL = ("beta_1", "beta_2", "rho", "momentum", "momentum_final")


def validate_optimizer(net: str, cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for an unknown optimizer, unknown key or out-of-range value."""
    name = cfg.get("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.{net}.name '{name}' unknown; valid: {', '.join(OPTIMIZERS)}")
    allowed = OPTIMIZERS[name][1]
    if cfg.get("lr") is None:
        raise ConfigError(f"optimizer.{net}.lr must be set (a number > 0)")
    ramp = cfg.get("momentum_steps") is not None or cfg.get("momentum_epochs") is not None
    if (cfg.get("momentum_final") is None) != (not ramp):
        raise ConfigError(f"optimizer.{net}.momentum_final and momentum_steps (or momentum_epochs) go together "
                          "(the momentum ramp); set both or neither")
    for key, value in cfg.items():
        if key == "name":
            continue
        if key not in allowed:
            raise ConfigError(f"optimizer.{net}.{key} is not a {name} setting; valid: {', '.join(allowed)}")
        if value is None or key == "nesterov":
            continue
        number(f"optimizer.{net}.{key}", value)
        if key in ("lr", "epsilon") and not value > 0:
            raise ConfigError(f"optimizer.{net}.{key} must be > 0, got {value}")
        if key in _UNIT_INTERVAL and not 0 <= value < 1:
            raise ConfigError(f"optimizer.{net}.{key} must be in [0, 1), got {value}")
        if key == "momentum_steps" and value < 1:
            raise ConfigError(f"optimizer.{net}.momentum_steps must be >= 1, got {value}")
        if key == "momentum_epochs" and not value > 0:
            raise ConfigError(f"optimizer.{net}.momentum_epochs must be > 0, got {value}")
        if key == "lr_decay" and not value >= 1:
            raise ConfigError(f"optimizer.{net}.lr_decay is the factor lr is divided by per update; "
                              f"it must be >= 1 (1: no decay), got {value}")
        if key == "lr_min" and value < 0:
            raise ConfigError(f"optimizer.{net}.lr_min must be >= 0, got {value}")
