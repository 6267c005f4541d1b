"""Run reports (``gan report RUN_DIR``), sweep reports (``gan sweep-report MULTIRUN_DIR``) and the
TensorBoard callback (``train.tensorboard=true``).

Imports are lazy: ``import gan_cli.report`` loads neither matplotlib nor TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_report", "write_sweep_report", "TensorBoardCallback"]


def write_report(run_dir: str | Path) -> Path:
    """RUN_DIR/report.html (self-contained) + RUN_DIR/report/*.png; see gan_cli.report.html."""
    from gan_cli.report.html import write_report as _write

    return _write(run_dir)


def write_sweep_report(multirun_dir: str | Path, sort: str | None = None) -> dict:
    """sweep_report.md / .csv / .html (+ .png) in MULTIRUN_DIR; see gan_cli.report.sweep."""
    from gan_cli.report.sweep import write_sweep_report as _write

    return _write(multirun_dir, sort=sort)


def __getattr__(name: str):
    if name == "TensorBoardCallback":
        from gan_cli.report.tensorboard import TensorBoardCallback

        return TensorBoardCallback
    raise AttributeError(name)
