"""Checkpoints: one HDF5 file per save, ``checkpoints/ckpt_XXXXXXXX.h5``, holding both networks' weights,
both optimizers' state, the round counter and the resolved config, every array under its name.

Layout inside the file (h5py, ``h5dump`` or any HDF5 tool reads it):

* ``g/<layer>/<weight>``, ``d/...``, ``g_ema/...`` (with ``train.g_ema``), ``e/...`` (GN-GAN's encoder):
  network weights, e.g. ``g/dense_1/kernel``, ``d/batch_normalization/moving_mean``;
* ``g_opt/<layer>/<weight>/<slot>`` (e.g. ``g_opt/dense_1/kernel/momentum``), ``g_opt/iteration``,
  ``g_opt/learning_rate``, and the same under ``d_opt``/``e_opt``;
* attributes ``round`` (the training round), ``config`` (the resolved config as YAML) and ``format``.

Layer names are those of the network with Keras's process-wide numbering removed: the n-th layer
named ``dense``/``dense_7``/... of a network (in weight order) is ``dense_n`` (the first plain ``dense``),
so a checkpoint names the same arrays in every process, and a network with a layer added or
removed is reported by name instead of being loaded into the wrong arrays.

The random-generator and data-iterator state is not stored separately because it is a pure
function of the round: noise, fake labels and gradient-penalty weights come from a stateless
RNG keyed on ``(train.seed, round, slot)`` (``gan.GAN``) and real batches from a stream keyed
on ``(train.seed, round)`` (``data.base.GanDataset.tf_dataset``), so ``round`` (plus the seed
in ``config``) *is* that state and a resumed run draws exactly the batches and noise an
uninterrupted one would. The learning rates live in the optimizer variables, so rates lowered
by ``train.on_nan=rollback`` survive a resume.

A save writes ``ckpt_XXXXXXXX.h5.tmp``, fsyncs it, renames it over the final name and fsyncs
the folder: a crash (even SIGKILL or power loss) leaves either the old set of checkpoints or
the new one; stale ``.tmp`` files are ignored and removed on resume (``remove_partial``). A
checkpoint that is unreadable anyway (a disk fault, a truncated copy) is skipped with a one-line
warning in favour of the newest readable one (``latest_checkpoint``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gan_cli.core.errors import UserError

FORMAT = "gan-cli checkpoint 2"
CKPT_RE = re.compile(r"^ckpt_(\d+)\.h5$")
OLD_RE = re.compile(r"^ckpt_(\d+)\.npz$")  # arrays by position, written before checkpoints named them


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{step:08d}.h5"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _old_format(path: Path) -> UserError:
    return UserError(f"{path} holds checkpoints of an older gan-cli (ckpt_*.npz, arrays by position) that this "
                     "version cannot read; train the run again (gan reproduce RUN)")


def latest_checkpoint(path: Path, warn: bool = True) -> Path:
    """``path`` itself if it is a checkpoint file, else the newest readable checkpoint of run folder
    ``path``; each newer unreadable one is skipped with a one-line warning (``warn``)."""
    path = Path(path)
    if path.is_file():
        if OLD_RE.match(path.name):
            raise _old_format(path)
        return path
    if not path.exists():
        raise UserError(f"{path} does not exist; give a run folder (outputs/DATE/TIME) or a checkpoint .h5")
    ckpts = list_checkpoints(path)
    if not ckpts:
        if (path / "checkpoints").is_dir() and any(OLD_RE.match(p.name) for p in (path / "checkpoints").iterdir()):
            raise _old_format(path)
        raise UserError(f"{path} has no checkpoints (checkpoints/ckpt_*.h5); train it first or resume it with gan resume")
    newest_first = ckpts[::-1]
    for i, ckpt in enumerate(newest_first[:-1]):
        problem = unreadable(ckpt)
        if problem is None:
            return ckpt
        if warn:
            print(f"warning: {ckpt.name} is unreadable ({problem}); using the previous checkpoint "
                  f"{newest_first[i + 1].name}", file=sys.stderr)
    return newest_first[-1]  # the oldest: reading it reports what is wrong when it is unreadable too


def unreadable(path: Path) -> str | None:
    """Why checkpoint ``path`` cannot be read in full (every array and attribute), or None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                return "not a gan-cli checkpoint"
            int(f.attrs["round"]), str(f.attrs["config"])

            def read(name, obj):
                if isinstance(obj, h5py.Dataset):
                    obj[()]

            f.visititems(read)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return None


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


def _canonical_paths(variables: list) -> dict[str, str]:
    """``variable.path`` (``layer/.../weight``) -> its name inside the network: every layer segment
    renumbered in order of appearance (``dense_7`` -> ``dense_1`` when it is the second ``dense``
    layer), so the names do not depend on how many layers the process built before."""
    renamed: dict[tuple, str] = {}
    counts: dict[tuple, int] = {}
    out = {}
    for v in variables:
        segments = v.path.split("/")
        parent: tuple = ()
        new = []
        for seg in segments[:-1]:
            key = parent + (seg,)
            if key not in renamed:
                base = re.sub(r"_\d+$", "", seg)
                n = counts.get((parent, base), 0)
                counts[(parent, base)] = n + 1
                renamed[key] = base if n == 0 else f"{base}_{n}"
            new.append(renamed[key])
            parent = key
        out[v.path] = "/".join(new + [segments[-1]])
    return out


def named_state(gan, optimizers: bool = True) -> list[tuple[str, object]]:
    """``(name, variable)`` for everything a checkpoint holds (module docstring), in file order."""
    named, names_of = [], {}
    for prefix, variables in state_groups(gan, optimizers):
        if not prefix.endswith("_opt"):
            canon = _canonical_paths(variables)
            names_of[prefix] = {v.path.replace("/", "_"): canon[v.path] for v in variables}
            named += [(f"{prefix}/{canon[v.path]}", v) for v in variables]
            continue
        net = names_of.get(prefix[: -len("_opt")], {})
        by_length = sorted(net, key=len, reverse=True)  # dense_1_kernel before dense_kernel
        for v in variables:
            slot_of = next((k for k in by_length if v.name.startswith(k + "_")), None)
            name = f"{net[slot_of]}/{v.name[len(slot_of) + 1:]}" if slot_of else v.name
            named.append((f"{prefix}/{name}", v))
    seen: dict[str, int] = {}
    unique = []
    for name, v in named:
        n = seen.get(name, 0)
        seen[name] = n + 1
        unique.append((name if n == 0 else f"{name}#{n}", v))
    return unique


def _write_file(path: Path, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Write and fsync the HDF5 file ``path``."""
    import h5py

    with open(path, "wb") as fh:
        with h5py.File(fh, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            for name, value in arrays.items():
                f.create_dataset(name, data=value)
        fh.flush()
        os.fsync(fh.fileno())


def save_checkpoint(gan, cfg: DictConfig, run_dir: Path, keep: int) -> Path:
    """Write the state of ``gan`` at its current round; keep the newest ``keep`` checkpoints."""
    step = int(gan.round.numpy())
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for name, v in named_state(gan)}
    attrs = {"format": FORMAT, "round": np.int64(step), "config": OmegaConf.to_yaml(cfg)}
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_file(tmp, arrays, attrs)
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


def _unreadable_error(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a readable gan-cli checkpoint ({why}); use another checkpoint")


def read_config(path: Path) -> DictConfig:
    """The resolved config stored in checkpoint ``path``."""
    import h5py

    if OLD_RE.match(Path(path).name):
        raise _old_format(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise _unreadable_error(path, "no gan-cli checkpoint format tag")
            return OmegaConf.create(str(f.attrs["config"]))
    except (OSError, KeyError, ValueError) as exc:
        raise _unreadable_error(path, type(exc).__name__) from None


def restore(gan, path: Path, optimizers: bool = True) -> int:
    """Load weights (and optimizer state) from ``path`` into a built ``gan`` by name; returns the round."""
    import h5py

    named = named_state(gan, optimizers)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise _unreadable_error(path, "no gan-cli checkpoint format tag")
            missing = [name for name, _ in named if name not in f]
            if missing:
                raise UserError(f"{path} does not match this model: it lacks {missing[0]}"
                                + (f" and {len(missing) - 1} more arrays" if len(missing) > 1 else ""))
            values = [(name, v, f[name][()]) for name, v in named]
            step = int(f.attrs["round"])
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path} is not a readable gan-cli checkpoint ({type(exc).__name__}); "
                        "delete it to fall back to the previous one") from None
    for name, v, value in values:
        if tuple(v.shape) != np.shape(value):
            raise UserError(f"{path} does not match this model ({name}: {np.shape(value)} vs {tuple(v.shape)})")
    for _, v, value in values:
        v.assign(value)
    gan.round.assign(step)
    return step
