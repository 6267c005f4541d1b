"""Reading what a run folder holds: ``metrics.jsonl`` rows and Hydra's ``.hydra/overrides.yaml``."""

from __future__ import annotations

import json
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` in file order (half-written or malformed lines skipped; [] if absent)."""
    rows = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a row half-written by a killed run
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows


def read_overrides(run_dir: Path) -> list[str] | None:
    """``.hydra/overrides.yaml`` as a list of strings, or None when the run has none or it is unreadable."""
    import yaml

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        value = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError:
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


# What a gan-cli run writes into its folder besides Hydra's .hydra/ and log file.
RUN_OUTPUTS = ("metrics.jsonl", "resolved_config.yaml", "checkpoints", "samples", "tensorboard", "report",
               "report.html", "DONE", "FAILED", "generator.keras")


def has_run_outputs(run_dir: Path) -> bool:
    """True when ``run_dir`` holds the files of an earlier run (metrics or checkpoints)."""
    return any((Path(run_dir) / name).exists() for name in ("metrics.jsonl", "checkpoints"))


def clear_run_outputs(run_dir: Path) -> None:
    """Delete what an earlier gan-cli run wrote into ``run_dir`` (``train.overwrite=true``); other files stay."""
    import shutil

    for name in RUN_OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
