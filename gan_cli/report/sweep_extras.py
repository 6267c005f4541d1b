"""What a sweep folder holds besides its job folders, for ``gan sweep-report``.

* ``optimization_results.yaml`` (hydra-optuna-sweeper, written when the search ends):
  ``best_params`` and ``best_value`` (one objective) or ``solutions`` (several); the job that
  produced the best value is found by its overrides.
* ``.submitit/`` (hydra-submitit-launcher): one folder per submitted job with its stdout/stderr
  logs, where a job killed by the cluster (time limit, memory) leaves its last words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SearchResult:
    """The Optuna sweeper's result: best parameters and value, and the job folder they came from."""

    best_params: dict[str, Any] = field(default_factory=dict)
    best_value: float | None = None
    best_job: str | None = None
    solutions: int = 0  # multi-objective: size of the Pareto front (best_params/value then unset)


def _same(a: Any, b: Any) -> bool:
    """Override string ``a`` (from overrides.yaml) equals Optuna's parameter value ``b``."""
    if str(a) == str(b):
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def read_search(root: Path, jobs: list) -> SearchResult | None:
    """``root/optimization_results.yaml`` as a SearchResult (None when absent or unreadable).

    ``jobs``: the sweep's ``sweep.Job`` list; the best job is the one whose overrides hold every
    best parameter (the lowest job number if several, e.g. a repeated suggestion)."""
    path = root / "optimization_results.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # noqa: BLE001 - a damaged file only loses this paragraph of the report
        return None
    if not isinstance(data, dict):
        return None
    if "solutions" in data:
        return SearchResult(solutions=len(data.get("solutions") or []))
    params = dict(data.get("best_params") or {})
    value = data.get("best_value")
    result = SearchResult(best_params=params, best_value=float(value) if isinstance(value, (int, float)) else None)
    for job in sorted(jobs, key=lambda j: int(j.name)):
        if params and all(k in job.overrides and _same(job.overrides[k], v) for k, v in params.items()):
            result.best_job = job.name
            break
    return result


def describe_search(result: SearchResult, objective: str | None) -> str:
    """One Markdown line: ``Optuna search: best reverse_kl = 0.12 (job 3): loss=hinge, ...``."""
    if result.solutions:
        return f"Optuna search (several objectives): {result.solutions} Pareto-optimal trial(s); see optimization_results.yaml."
    name = objective or "value"
    value = "-" if result.best_value is None else f"{result.best_value:.4g}"
    job = f" (job {result.best_job})" if result.best_job is not None else ""
    params = ", ".join(f"`{k}={v}`" for k, v in result.best_params.items())
    return f"Optuna search: best {name} = {value}{job}: {params or '(no parameters)'}."


def objective_of(jobs: list) -> str | None:
    """``metrics.objective`` of the sweep (from the first job's saved config), if any."""
    from omegaconf import OmegaConf

    for job in jobs:
        path = Path(job.path) / ".hydra" / "config.yaml"
        if path.is_file():
            try:
                value = OmegaConf.select(OmegaConf.load(path), "metrics.objective")
            except Exception:  # noqa: BLE001
                return None
            return str(value) if value is not None else None
    return None


def submitit_logs(root: Path) -> str | None:
    """A Markdown note pointing at the submitit log folder when the sweep ran through submitit."""
    folder = root / ".submitit"
    if not folder.is_dir():
        return None
    return (f"Launched with submitit: each job's stdout/stderr is in `{folder}/JOB_ID/JOB_ID_*_log.out` / "
            "`*_log.err` (a job killed by the scheduler shows there as running with no DONE/FAILED).")
