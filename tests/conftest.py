"""Shared fixtures: a composed config, a private data cache, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # the CLI's setting (gan_cli/cli/main.py), so in-process runs match it

# Tiny training settings shared by the end-to-end tests.
TINY = ["train.steps=20", "train.eval_every=10", "train.checkpoint_every=10", "train.batch_size=32",
        "metrics.num_samples=200", "train.progress=false", "dataset.num_samples=2000", "train.report=false"]


@pytest.fixture(scope="session", autouse=True)
def absl_leaves_streams_open():
    """In-process `gan train` runs Hydra, which reconfigures logging and so closes every handler. absl's
    handler (created when TensorFlow is first imported, holding the sys.stderr of that moment: pytest's
    capture) closes its stream when closed, and pytest's capture then fails on reading it. Here it only
    flushes, as the standard StreamHandler does; a real `gan` process is unaffected (its stream is the
    process's own stderr, which absl leaves open)."""
    import logging

    from absl import logging as absl_logging

    absl_logging.PythonHandler.close = logging.StreamHandler.close


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """Keep built-in data sets and classifiers of the test session out of the user's cache."""
    path = tmp_path_factory.mktemp("gan_cli_data")
    os.environ["GAN_CLI_DATA"] = str(path)
    return path


def compose(overrides: list[str]):
    """The real config composed from conf/ with ``overrides``."""
    from hydra import compose as hydra_compose, initialize_config_module

    with initialize_config_module("gan_cli.conf", version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def run_gan(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed ``gan`` command (through this interpreter) and capture its output."""
    return subprocess.run([sys.executable, "-m", "gan_cli.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ})


def gan(*args: str) -> int:
    """``gan ARGS`` in this process (TensorFlow is imported once per test session); returns the exit status."""
    from gan_cli.cli.main import main

    try:
        return main(list(args))
    except SystemExit as exc:  # Hydra ends failed runs with SystemExit
        return int(exc.code or 0)


def rows(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl``."""
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def build(overrides, base):
    """A built (untrained) GAN, its resolved config and its dataset for ``[*base, *overrides]``."""
    from gan_cli.config import resolve as config_mod
    from gan_cli.data.build import build_dataset
    from gan_cli.training.build import build_gan

    cfg = compose([*base, *overrides])
    config_mod.validate(cfg)
    data = build_dataset(cfg.dataset)
    cfg = config_mod.resolve(cfg, data)
    return build_gan(cfg, data), cfg, data
