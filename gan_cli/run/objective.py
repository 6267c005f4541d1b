"""``metrics.objective``: the one final metric a job hands to a sweeper (the Optuna sweeper needs a float).

The value is the objective's entry in the last row of the run's ``metrics.jsonl`` (the final
evaluation, the same row ``train`` returns). A metric that was NaN/Inf there (logged as null) gives
``None``, which the Optuna sweeper records as a failed trial (it cannot tell a NaN). A name the
data set's evaluator does not produce is a ConfigError listing the names it does produce; the
training run raises it at its first evaluation already (``ObjectiveCheck``).
"""

from __future__ import annotations

import math
from pathlib import Path

from gan_cli.core.errors import ConfigError

# keys of a metrics.jsonl row that are not something to optimise
_NOT_OBJECTIVES = ("step", "time")


def _names(row: dict) -> list[str]:
    return [k for k in row if k not in _NOT_OBJECTIVES]


def check(objective: str, row: dict, dataset: str) -> None:
    """ConfigError unless ``objective`` is a metric of the metrics row ``row``."""
    if objective not in row or objective in _NOT_OBJECTIVES:
        raise ConfigError(f"metrics.objective '{objective}' is not a metric of dataset '{dataset}'; "
                          f"valid: {', '.join(_names(row))}")


def value(objective: str, run_dir: Path, dataset: str) -> float | None:
    """The final value of ``objective`` in ``run_dir/metrics.jsonl`` (None when it was not finite)."""
    from gan_cli.run.files import read_rows

    rows = read_rows(Path(run_dir) / "metrics.jsonl")
    if not rows:
        return None
    check(objective, rows[-1], dataset)
    v = rows[-1][objective]
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(float(v)):
        return None
    return float(v)


def callback(monitor, objective: str | None, dataset: str):
    """A Keras callback that checks the objective name against the first evaluated metrics row
    (so a misspelt objective stops the run at its first evaluation, not after the last); ``None``
    when no objective is set."""
    if objective is None:
        return None
    import keras

    class ObjectiveCheck(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if monitor.last_row is not None:
                check(objective, monitor.last_row, dataset)

    return ObjectiveCheck()
