"""Reading a run's ``metrics.jsonl``: one JSON object per evaluation with an integer ``step``."""

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
