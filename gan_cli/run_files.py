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
