"""The Hydra application behind ``gan train``: composes ``conf/`` and calls ``train(cfg)``."""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gan_cli.core.errors import UserError


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _reused_worker() -> bool:
    """True in a job of ``hydra/launcher=joblib``: its loky worker processes run job after job."""
    from hydra.core.hydra_config import HydraConfig

    target = str(HydraConfig.get().launcher.get("_target_", ""))
    return _is_multirun() and "joblib" in target.lower()


@hydra.main(version_base="1.3", config_path="pkg://gan_cli.conf", config_name="config")
def app(cfg: DictConfig):
    """Run one job. A bad-input error ends a single run with exit 2 and no half-written folder;
    in a sweep the job is marked failed (``FAILED`` file in its folder) and the sweep goes on.

    Returns the final metrics (a dict), or with ``metrics.objective`` set the float value of that
    metric (what the Optuna sweeper optimises; None for a failed job or a NaN/Inf value, which
    Optuna records as a failed trial). A joblib job trains in a process of its own
    (``gan_cli.cli.job_process``)."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        from gan_cli.run.files import clear_run_outputs, has_run_outputs

        if cfg.train.get("overwrite", False):
            clear_run_outputs(run_dir)
        elif has_run_outputs(run_dir):
            if "--experimental-rerun" in sys.argv:  # Hydra reruns a job in its own folder, overrides ignored
                raise UserError(f"--experimental-rerun would train again into {run_dir}, which holds that run's "
                                f"results; use gan reproduce {run_dir} (a new folder), or rerun a job that was "
                                "run with train.overwrite=true")
            raise UserError(f"the run folder {run_dir} holds an earlier run; choose another hydra.run.dir "
                            "or add train.overwrite=true")
        if _reused_worker():
            from gan_cli.cli.job_process import train_in_fresh_process

            result = train_in_fresh_process(cfg, run_dir)
        else:
            from gan_cli.core.tf_import import quiet_tensorflow

            quiet_tensorflow()  # no-op when the command line already imported it
            from gan_cli.job.train import train

            result = train(cfg, run_dir, report_later=True)
        objective = cfg.get("metrics", {}).get("objective")
        if objective is not None:
            from gan_cli.run import objective as objective_mod
            result = objective_mod.value(objective, run_dir, str(cfg.dataset.get("name")))
        (run_dir / "DONE").write_text("ok\n")
        from gan_cli.report import background

        background.after_done(cfg, run_dir)  # train.report: drawn by a process of its own from now on
        return result
    except Exception as exc:  # noqa: BLE001 - reported as one line, sweep continues
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if _is_multirun():
            (run_dir / "FAILED").write_text(f"{type(exc).__name__}: {message}\n")
            print(f"error: job {HydraConfig.get().job.num} failed: {message}", file=sys.stderr)
            return None
        if isinstance(exc, UserError):
            if not (run_dir / "checkpoints").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
                with contextlib.suppress(OSError):  # the date folder Hydra made for it, when nothing else is in it
                    run_dir.parent.rmdir()
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
        raise
