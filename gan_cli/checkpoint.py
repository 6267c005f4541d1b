"""Checkpoints: one ``.npz`` per save holding both networks' weights, both optimizers' state,
the round counter and the resolved config (YAML), written atomically (temp file + rename).

Layout inside the file: ``g/<i>``, ``d/<i>`` (``model.weights`` order), ``g_ema/<i>`` (with
``train.g_ema``), ``g_opt/<i>``,
``d_opt/<i>`` (``optimizer.variables`` order: iteration count, learning rate, slots),
``round`` (int64 scalar), ``config`` (str).

The random-generator and data-iterator state is not stored separately because it is a pure
function of the round: noise, fake labels and gradient-penalty weights come from a stateless
RNG keyed on ``(train.seed, round, slot)`` (``gan.GAN``) and real batches from a stream keyed
on ``(train.seed, round)`` (``data.base.GanDataset.tf_dataset``), so ``round`` (plus the seed
in ``config``) *is* that state and a resumed run draws exactly the batches and noise an
uninterrupted one would. The learning rates live in the optimizer variables, so rates lowered
by ``train.on_nan=rollback`` survive a resume.

A save writes ``ckpt_XXXXXXXX.npz.tmp``, fsyncs it, renames it over the final name and fsyncs
the folder: a crash (even SIGKILL or power loss) leaves either the old set of checkpoints or
the new one, never a truncated ``ckpt_*.npz``; stale ``.tmp`` files are ignored and removed on
resume (``remove_partial``).
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gan_cli.errors import UserError

_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
CKPT_RE = re.compile(r"^ckpt_(\d+)\.npz$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{step:08d}.npz"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a checkpoint file, else the newest checkpoint of run folder ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise UserError(f"{path} does not exist; give a run folder (outputs/DATE/TIME) or a checkpoint .npz")
    ckpts = list_checkpoints(path)
    if not ckpts:
        raise UserError(f"{path} has no checkpoints (checkpoints/ckpt_*.npz); train it first or resume it with gan resume")
    return ckpts[-1]


def state_groups(gan, optimizers: bool = True) -> list[tuple[str, list]]:
    """``(prefix, variables)`` of everything a checkpoint holds besides the round counter, in file order:
    ``g``/``d`` network weights, ``g_ema`` (the EMA generator, with ``train.g_ema``), (with ``optimizers``)
    ``g_opt``/``d_opt`` optimizer variables, then
    whatever a GAN subclass adds through ``extra_state_groups(optimizers)`` (GN-GAN: ``e``/``e_opt``, its
    encoder and the encoder's optimizer)."""
    groups = [("g", list(gan.generator.weights)), ("d", list(gan.discriminator.weights))]
    if getattr(gan, "ema_generator", None) is not None:  # train.g_ema: the averaged generator inference uses
        groups.append(("g_ema", list(gan.ema_generator.weights)))
    if optimizers:
        groups += [("g_opt", list(gan.g_optimizer.variables)), ("d_opt", list(gan.d_optimizer.variables))]
    if hasattr(gan, "extra_state_groups"):
        groups += gan.extra_state_groups(optimizers)
    return groups


def save_checkpoint(gan, cfg: DictConfig, run_dir: Path, keep: int) -> Path:
    """Write the state of ``gan`` at its current round; keep the newest ``keep`` checkpoints."""
    step = int(gan.round.numpy())
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"round": np.asarray(step, np.int64),
                                     "config": np.asarray(OmegaConf.to_yaml(cfg))}
    for prefix, variables in state_groups(gan):
        for i, v in enumerate(variables):
            arrays[f"{prefix}/{i}"] = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, read-only, interrupted: leave no partial file behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort; not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_partial(run_dir: Path) -> None:
    """Delete ``checkpoints/*.tmp`` left by a save that was killed half-way."""
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir():
        for tmp in folder.glob("*.tmp"):
            tmp.unlink(missing_ok=True)


def read_config(path: Path) -> DictConfig:
    """The resolved config stored in checkpoint ``path``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return OmegaConf.create(str(f["config"]))
    except _READ_ERRORS as exc:
        raise UserError(f"{path} is not a readable gan-cli checkpoint ({type(exc).__name__}); use another checkpoint") from None


def restore(gan, path: Path, optimizers: bool = True) -> int:
    """Load weights (and optimizer state) from ``path`` into a built ``gan``; returns the round."""
    try:
        with np.load(path, allow_pickle=False) as f:
            values = [(v, f[f"{prefix}/{i}"]) for prefix, variables in state_groups(gan, optimizers)
                      for i, v in enumerate(variables)]
            step = int(f["round"])
    except _READ_ERRORS as exc:
        raise UserError(f"{path} is not a readable gan-cli checkpoint ({type(exc).__name__}); "
                        "delete it to fall back to the previous one") from None
    for v, value in values:
        if tuple(v.shape) != value.shape:
            raise UserError(f"{path} does not match this model ({getattr(v, 'path', v.name)}: "
                            f"{value.shape} vs {tuple(v.shape)})")
    for v, value in values:
        v.assign(value)
    gan.round.assign(step)
    return step
