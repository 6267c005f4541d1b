"""Critic/generator schedule: ``train.n_critic`` as a count or a mapping ``{start round: count}``.

``train.n_critic=5`` runs 5 discriminator updates in every round; ``train.n_critic={0:100,25:5}``
runs 100 in rounds 0..24 and 5 from round 25 on (the WGAN reference code's 100 critic steps
while the generator is young). ``train.py`` trains each constant piece (a *segment*) with its own
compiled step, and ``GAN`` keys its random slots on ``round * slot_stride`` with one stride for
the whole run, so noise does not depend on where a run was interrupted and resumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gan_cli.core.errors import ConfigError

MAX_COUNT = 2**31 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def critic_schedule(value: Any) -> dict[int, int]:
    """``train.n_critic`` (an int or a mapping ``round -> count``) as a sorted ``{start round: count}``.

    Raises a one-line ConfigError when a count is not an integer >= 1, a key is not an integer
    >= 0, or the mapping has no entry for round 0.
    """
    if isinstance(value, Mapping):  # a dict or a DictConfig
        items = list(value.items())
        if not items:
            raise ConfigError("train.n_critic schedule is empty; give counts per start round, e.g. "
                              "'train.n_critic={0:100,25:5}'")
        schedule: dict[int, int] = {}
        for key, count in items:
            if not _is_int(key) or key < 0:
                raise ConfigError(f"train.n_critic schedule key {key!r} must be a round number (an integer >= 0), "
                                  "e.g. 'train.n_critic={0:100,25:5}'")
            if not _is_int(count) or not 1 <= count <= MAX_COUNT:
                raise ConfigError(f"train.n_critic schedule count {count!r} (from round {key}) must be an integer "
                                  ">= 1, e.g. 'train.n_critic={0:100,25:5}'")
            schedule[int(key)] = int(count)
        if 0 not in schedule:
            raise ConfigError(f"train.n_critic schedule must start at round 0 (keys {sorted(schedule)}); "
                              "add a count for round 0, e.g. 'train.n_critic={0:100,25:5}'")
        return dict(sorted(schedule.items()))
    if not _is_int(value):
        raise ConfigError(f"train.n_critic must be an integer or a schedule like '{{0:100,25:5}}', got {value!r}")
    if value < 1:
        raise ConfigError(f"train.n_critic must be >= 1, got {value}")
    if value > MAX_COUNT:
        raise ConfigError(f"train.n_critic must be <= {MAX_COUNT}, got {value}")
    return {0: int(value)}


def n_critic_at(schedule: Mapping[int, int], round_: int) -> int:
    """The discriminator updates of round ``round_`` (the entry with the largest start <= ``round_``)."""
    return [count for start, count in sorted(schedule.items()) if start <= round_][-1]


def critic_segments(value: Any, start: int, end: int) -> list[tuple[int, int, int]]:
    """Rounds ``start..end-1`` cut where the count changes: ``[(first, end, count), ...]`` (empty when start >= end)."""
    schedule = critic_schedule(value)
    cuts = sorted({start, end, *(k for k in schedule if start < k < end)})
    return [(a, b, n_critic_at(schedule, a)) for a, b in zip(cuts, cuts[1:]) if a < b]


def slot_stride(value: Any, n_gen: int) -> int:
    """Random slots per round: the largest count plus ``n_gen`` (``n_critic + n_gen`` for a constant count)."""
    return max(critic_schedule(value).values()) + int(n_gen)
