"""The value checks every config rule is built from: one-line ConfigErrors naming the key and the range."""

from __future__ import annotations

from typing import Any

from gan_cli.core.errors import ConfigError


def number(where: str, value: Any, low: float = float("-inf"), high: float | None = None,
           low_open: bool = False) -> float:
    """``value`` as a float, else ConfigError: not a number, or outside ``[low, high]`` (``(low, ...`` when
    ``low_open``; no upper bound when ``high`` is None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if (value <= low if low_open else value < low) or (high is not None and value > high):
        rng = ("(" if low_open else "[") + f"{low:g}, " + (f"{high:g}]" if high is not None else "inf)")
        raise ConfigError(f"{where} must be in {rng}, got {value}")
    return float(value)


def integer(where: str, value: Any, minimum: int, hint: str = "") -> int:
    """``value`` as an int >= ``minimum``, else ConfigError (``hint`` says what the key means)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where} must be an integer >= {minimum}{f' ({hint})' if hint else ''}, got {value!r}")
    return value


def boolean(where: str, value: Any) -> bool:
    """``value`` when it is true or false, else ConfigError."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value
