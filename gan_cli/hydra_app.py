"""The Hydra application behind ``gan train``: composes ``conf/`` and calls ``train(cfg)``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from gan_cli.errors import UserError


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="pkg://gan_cli.conf", config_name="config")
def app(cfg: DictConfig):
    """Run one job. A bad-input error ends a single run with exit 2 and no half-written folder;
    in a sweep the job is marked failed (``FAILED`` file in its folder) and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig

    from gan_cli.train import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = train(cfg, run_dir)
        (run_dir / "DONE").write_text("ok\n")
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
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
        raise
