"""``gan data csm -o FILE.h5 [--force] [OVERRIDE ...]``: simulate a CSM set into an HDF5 file.

Overrides are dataset keys from ``conf/dataset/csm.yaml``, written ``key=value`` or
``dataset.key=value`` (e.g. ``dataset.array=minidsp_uma-16 num_samples=100 mode=analytic``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import fields
from pathlib import Path

from gan_cli.core.errors import ConfigError
from gan_cli.data.csm_sim import SimParams

# keys that shape the simulated data (the rest of csm.yaml is about reading/training)
SIM_KEYS = tuple(f.name for f in fields(SimParams))


def dataset_yaml() -> Path:
    """The packaged ``conf/dataset/csm.yaml`` (source tree or installed ``gan_cli.conf``)."""
    cand = Path(__file__).resolve().parents[2] / "conf" / "dataset" / "csm.yaml"
    if cand.is_file():
        return cand
    try:
        from importlib.resources import files

        res = files("gan_cli.conf") / "dataset" / "csm.yaml"
        if res.is_file():
            return Path(str(res))
    except (ModuleNotFoundError, TypeError):
        pass
    raise ConfigError("cannot find the packaged conf/dataset/csm.yaml; reinstall gan-cli")


def load_config(overrides: list[str]):
    """The csm dataset config with ``overrides`` applied; ConfigError on unknown keys or bad syntax."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(dataset_yaml())
    valid = [k for k in base.keys() if k not in ("_target_", "name", "defaults")]
    dot = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; e.g. dataset.num_samples=100")
        key, val = item.split("=", 1)
        key = key.strip().lstrip("+")
        if key.startswith("dataset."):
            key = key[len("dataset."):]
        if key not in valid:
            raise ConfigError(f"unknown dataset key {key!r}; valid keys: {', '.join(valid)}")
        dot.append(f"{key}={val}")
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(dot))
    except Exception as exc:  # omegaconf grammar errors
        raise ConfigError(f"cannot parse overrides {' '.join(overrides)}: {str(exc).splitlines()[0]}") from None
    return cfg


def generate_command(output: str, force: bool, overrides: list[str]) -> int:
    """Simulate a CSM set per the overrides into ``output`` (HDF5, atomic); print a one-line summary."""
    from gan_cli.data.csm_sim import CsmSimulator
    from gan_cli.core.errors import DataError

    out = Path(output)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise ConfigError(f"output {output!r} must end in .h5 (HDF5); e.g. gan data csm -o csm.h5")
    if out.exists() and not force:
        raise DataError(f"{out} already exists; pass --force to overwrite it or choose another -o FILE")
    from gan_cli.data.csm_sim import SimParams

    params = SimParams.from_mapping(load_config(overrides))
    params.validate()
    sim = CsmSimulator(params)
    t0 = time.perf_counter()
    # one writer at a time per output file; the lock file lives in the data folder, not beside the output
    from gan_cli.data.base import data_cache_dir
    from gan_cli.data.cache import exclusive

    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
    with exclusive(out, lock_file=data_cache_dir() / "locks" / f"{out.name}-{digest}.lock"):
        if out.exists() and not force:  # written meanwhile by another command
            raise DataError(f"{out} already exists; pass --force to overwrite it or choose another -o FILE")
        sim.write(out, force=force, progress=True)
    dt = time.perf_counter() - t0
    size = out.stat().st_size / 2 ** 20
    from gan_cli.data.csm_io import fmt_hz
    from gan_cli.data.csm_sim import array_label

    freqs = ", ".join(fmt_hz(f) for f in sim.frequencies)
    lines = f"{len(sim.frequencies)} lines (N, F, M, M) at f={freqs} Hz" if len(sim.frequencies) > 1 else f"f={freqs} Hz"
    print(f"wrote {out}: {params.num_samples} {params.mode} CSMs, {sim.num_mics} mics ({array_label(params.array)}), "
          f"{lines}, ref mic {sim.reference_mic}, {size:.1f} MiB in {dt:.1f} s")
    return 0
