"""Hydra callbacks of ``gan train`` (listed under ``hydra.callbacks`` in conf/config.yaml).

``RunChecks`` validates inside the composed app, before Hydra creates a folder or anything is built:

* a single run (``on_run_start``): the composed config (``gan_cli.config.resolve.validate``) and the run folder
  (creatable, writable, not full; an existing non-empty one only with ``train.overwrite=true``);
* a sweep (``on_multirun_start``): every job of the sweep (Hydra's own override parser expands the
  sweep; each job is composed with ``hydra.compose``, so ``--config-dir`` and ``hydra.searchpath``
  apply) and every value of an Optuna search space (``hydra.sweeper.params``), then the sweep folder;
* after a sweep (``on_multirun_end``): the jobs' reports still being drawn in the background are waited for
  (``gan_cli.report.background``), then the jobs that failed (their ``FAILED`` files) are named with
  their one-line causes and the command exits non-zero.

Hydra turns an exception in a callback into a warning and carries on, so a failed check is raised
as ``ChecksFailed``, a ``SystemExit`` holding the one-line ``UserError``: ``gan train`` prints the
error and exits with its status (2 for bad input, 1 for failed sweep jobs).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gan_cli.core.errors import UserError

MAX_CHECKED_JOBS = 2000  # a sweep larger than this has its first jobs checked up front, the rest when they run


class JobsFailed(UserError):
    """Some jobs of a sweep failed (each wrote its cause to its FAILED file); the others finished."""

    exit_code = 1


class ChecksFailed(SystemExit):
    """Ends the Hydra app from a callback; ``error`` is the UserError to report (``gan train`` does)."""

    def __init__(self, error: UserError):
        super().__init__(f"error: {error}")
        self.error = error


def _checked(check):
    """Run ``check()``; a UserError it raises ends the app (``ChecksFailed``)."""
    try:
        check()
    except UserError as exc:
        raise ChecksFailed(exc) from None


def check_config(cfg: DictConfig, where: str = "") -> None:
    """``gan_cli.config.resolve.validate`` on a composed job config, with keys a ``~key`` deletion removed taken
    from the packaged defaults; ``where`` prefixes the message (which sweep job)."""
    from gan_cli.config.resolve import validate
    from gan_cli.config.resolve import with_train_defaults as _with_train_defaults

    try:
        validate(_with_train_defaults(cfg))
    except UserError as exc:
        if not where:
            raise
        raise type(exc)(f"{where}{exc}") from None


def check_output_dir(folder: str, key: str, overwrite: bool) -> None:
    """Fail when run (sweep) folder ``folder`` cannot be created or written, or holds a previous run."""
    probe = Path(folder)
    if probe.is_dir() and any(probe.iterdir()) and not overwrite:
        raise UserError(f"the run folder {folder} exists and is not empty; choose another {key} "
                        "or add train.overwrite=true to replace what gan-cli wrote there")
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if os.path.lexists(probe) and not probe.is_dir():
        raise UserError(f"cannot create the run folder {folder}: {probe} is a file, not a folder; choose another {key}")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot create the run folder {folder}: {probe} is not writable; choose another {key}")
    if probe.is_dir() and shutil.disk_usage(probe).free < 1 << 20:
        raise UserError(f"cannot create the run folder {folder}: no space left on the disk of {probe}; "
                        f"free some space or choose another {key}")


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """All concrete override lists of a (possibly sweeping) override list, parsed by Hydra's own grammar.
    An ``interval(a, b)`` search range (Optuna sweeper) stands for its two ends: what the checks need."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise UserError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from None
    choices = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_delete():
            choices.append([key if o.value() is None else f"{key}={o.get_value_element_as_str()}"])
            continue
        if o.is_interval_sweep():
            values = [str(o.value().start), str(o.value().end)]
        elif o.is_sweep_override():
            values = list(o.sweep_string_iterator())
        else:
            values = [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])  # the key element keeps its + / ++ prefix
    return [list(c) for c in itertools.product(*choices)]


def _search_space_jobs(job: list[str], params: dict) -> list[tuple[list[str], str]]:
    """Jobs covering every value of ``hydra.sweeper.params`` (an Optuna search space): all parameters
    at their first value, then each parameter through its values with the others at their first."""
    given = {o.lstrip("+~").partition("=")[0] for o in job}  # fixed on the command line: not searched
    space = {}
    for key, value in params.items():
        if key in given:
            continue
        try:
            space[key] = [o[0] for o in expand_sweep([f"{key}={value}"])]
        except UserError as exc:
            raise UserError(f"hydra.sweeper.params.{key}: cannot parse '{value}': {exc}") from None
    first = {k: v[0] for k, v in space.items()}
    out = [(job + list(first.values()), "search space: ")]
    for key, values in space.items():
        for v in values[1:]:
            out.append((job + [v if k == key else first[k] for k in space], f"hydra.sweeper.params {v}: "))
    return out


def _compose_error(exc: Exception) -> str:
    return " ".join(str(exc).split()).split(" Config search path")[0]


class RunChecks(Callback):
    """Validation before a run or sweep starts, and the exit status of a sweep with failed jobs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _checked(lambda: self._run_start(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _checked(lambda: self._multirun_start(config, kwargs.get("config_name")))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _checked(lambda: self._multirun_end(config))

    @staticmethod
    def _run_start(config: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # for ${hydra:...} interpolations in the checked values
        check_config(config)
        check_output_dir(str(config.hydra.run.dir), "hydra.run.dir", bool(config.train.get("overwrite", False)))

    @staticmethod
    def _multirun_start(config: DictConfig, config_name: str | None) -> None:
        from hydra import compose
        from hydra.core.hydra_config import HydraConfig
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        HydraConfig.instance().set_config(config)
        config_name = config_name or config.hydra.job.config_name
        task = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        hydra_overrides = [o for o in OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)
                           if not o.lstrip("+~").startswith(("hydra.mode", "hydra.sweeper.params"))]
        swept = [i for i, o in enumerate(task) if len(expand_sweep([o])) > 1]
        jobs = [(job, f"job {' '.join(job[i] for i in swept)}: " if swept else "")
                for job in expand_sweep(task)[:MAX_CHECKED_JOBS]]
        params = config.hydra.sweeper.get("params") or {}
        if params:
            jobs += _search_space_jobs(jobs[0][0], OmegaConf.to_container(params, resolve=False))
        for job, where in jobs:
            try:
                cfg = compose(config_name, overrides=job + hydra_overrides)
            except (HydraException, OmegaConfBaseException) as exc:
                raise UserError(f"{where}{_compose_error(exc)}  (see `gan train --help`)") from None
            check_config(cfg, where)
        check_output_dir(str(config.hydra.sweep.dir), "hydra.sweep.dir", bool(config.train.get("overwrite", False)))

    @staticmethod
    def _multirun_end(config: DictConfig) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        from gan_cli.report import background

        for marker in sweep.rglob(background.PENDING):  # the jobs' reports, drawn while later jobs trained
            background.wait(marker.parent)
        failed = sorted(sweep.rglob("FAILED"), key=lambda p: [int(s) if s.isdigit() else s for s in p.parent.parts])
        if not failed:
            return
        total = len({p.parent for p in sweep.rglob(".hydra")}) or len(failed)
        causes = "; ".join(f"{p.parent.relative_to(sweep)}: {p.read_text().strip()}" for p in failed)
        raise JobsFailed(f"{len(failed)} of {total} jobs of {sweep} failed: {causes}")
