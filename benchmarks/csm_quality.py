"""How real do generated CSMs look? Trains each setup as a `gan train` subprocess and scores it.

For every setup and seed: `gan train <setup's overrides> train.seed=S` (timed as a whole process),
then `gan sample RUN -n N -o gen.h5`, then a comparison with a *fresh* real set simulated by
`gan data csm` with the run's own dataset keys and another simulation seed (``--real-seed``), so
nothing the GAN saw during training is reused. The comparison is gan_cli.metrics.csm: c2st (5-fold
gradient-boosted classifier on the 16 largest eigenvalues in dB and the 21 x 21 beamforming map in
dB), spectrum_db, peak W1 in apertures, source_count_dist, psd_rate. A "real vs real" row per array
(two fresh sets) shows the floor of each metric at that sample size.

    python benchmarks/csm_quality.py                                  # every setup, seeds 0 1 2
    python benchmarks/csm_quality.py --setups csm_uma16 --seeds 0 --out benchmarks/results/csm_quality.md

Targets (issue "Generated CSMs that pass for real"): csm_uma16 within 10 minutes with c2st <= 0.75,
spectrum_db <= 1.0 dB, peak W1 <= 0.06 apertures and psd_rate 1.0; csm_vogel64 within 30 minutes
with c2st <= 0.85, spectrum_db <= 1.5 dB and peak W1 <= 0.08 apertures. The table marks each row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gan_cli.data.csm_cli import SIM_KEYS as CSM_SIM_KEYS  # noqa: E402

# name -> (overrides, description)
SETUPS: dict[str, tuple[list[str], str]] = {
    "csm_uma16": (["experiment=csm_uma16"], "16 mics, csm_physics, WGAN (clipping, RMSProp, 5 critic updates)"),
    "csm_vogel64": (["experiment=csm_vogel64"], "64 mics, csm_physics, WGAN (clipping, RMSProp, 5 critic updates)"),
    "main_job": (["loss=wgan", "dataset=csm"], "the Quick start's main job: default model, 300 steps"),
    "seed000_mlp": (["loss=wgan", "dataset=csm", "model=csm_mlp"],
                    "seed 000's architecture (MLP G on eigenvectors, conv critic), 300 steps"),
    "seed000_eigmode": (["loss=wgan", "dataset=csm", "model=csm_mlp", "dataset.representation=eigmode"],
                        "seed 000's architecture generating eigenvalues too (eigmode), 300 steps"),
}
TARGETS = {  # setup -> (max minutes, {metric: bound}); psd_rate is a lower bound
    "csm_uma16": (10.0, {"c2st": 0.75, "spectrum_db": 1.0, "peak_w1": 0.06, "psd_rate": 1.0}),
    "csm_vogel64": (30.0, {"c2st": 0.85, "spectrum_db": 1.5, "peak_w1": 0.08}),
}
# the keys that shape a simulated set, less its size and seed (the fresh real set has its own)
SIM_KEYS = tuple(k for k in CSM_SIM_KEYS if k not in ("num_samples", "seed"))
COLUMNS = ("c2st", "spectrum_db", "peak_w1", "source_count_dist", "psd_rate")


def gan(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gan_cli.cli.main", *args]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(args[:3])} ... exited {res.returncode}: {' | '.join(tail)}")
    return res


def real_set(dataset: dict, n: int, seed: int, folder: Path, env: dict) -> Path:
    """A fresh simulated set with the run's dataset keys (cached per keys in ``folder``)."""
    keys = {k: dataset.get(k) for k in SIM_KEYS}
    tag = hashlib.sha256(json.dumps([keys, n, seed], sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = folder / f"real_{tag}.h5"
    if not path.exists():
        over = [f"dataset.{k}={'null' if v is None else v}" for k, v in keys.items()]
        gan("data", "csm", "-o", str(path), "--force", *over, f"dataset.num_samples={n}", f"dataset.seed={seed}", env=env)
    return path


def normalised(path: Path):
    """(normalised CSMs (n, M, M), attributes, mic positions) of a gan-cli HDF5 file."""
    from gan_cli.data.csm_io import read_csm_file

    d = read_csm_file(path)
    ref = int(d.attrs.get("reference_mic", d.csm.shape[-1] - 1))
    csm = d.csm / d.csm[:, ref, ref].real[:, None, None]
    return csm, d.attrs, d.mic_positions, ref


def score(gen_path: Path, real_path: Path, max_sources: int) -> dict[str, float]:
    from gan_cli.data.csm_sim import array_aperture
    from gan_cli.metrics.csm import MapBeamformer, compare, side_stats

    real, attrs, pos, ref = normalised(real_path)
    gen = normalised(gen_path)[0]
    ap = array_aperture(pos)
    bf = MapBeamformer(pos, float(attrs["frequency"]), ref, extent=0.5 * ap, z=0.5 * ap, c=float(attrs.get("c", 343.0)),
                       grid_points=21)
    g, r = side_stats(gen, max_sources=max_sources, beamformer=bf), side_stats(real, max_sources=max_sources, beamformer=bf)
    out = compare(g, r, max_sources=max_sources, aperture=ap)
    out["psd_rate"] = g["psd_rate"]
    return out


def run_one(setup: str, seed: int, args, work: Path, env: dict) -> dict:
    from omegaconf import OmegaConf

    run = work / f"{setup}_s{seed}"
    overrides = [*SETUPS[setup][0], *args.overrides, f"train.seed={seed}", f"hydra.run.dir={run}", "train.overwrite=true"]
    t0 = time.perf_counter()
    gan("train", *overrides, env=env)
    minutes = (time.perf_counter() - t0) / 60
    cfg = OmegaConf.to_container(OmegaConf.load(run / "resolved_config.yaml"), resolve=True)
    gen = run / "gen.h5"
    gan("sample", str(run), "-n", str(args.samples), "-o", str(gen), "--force", "--seed", str(1000 + seed), env=env)
    real = real_set(cfg["dataset"], args.samples, args.real_seed, work, env)
    row = score(gen, real, int(cfg["dataset"].get("max_sources", 10)))
    row.update(setup=setup, seed=seed, minutes=minutes, array=cfg["dataset"]["array"], dataset=cfg["dataset"])
    return row


def floor_row(dataset: dict, args, work: Path, env: dict) -> dict:
    a = real_set(dataset, args.samples, args.real_seed, work, env)
    b = real_set(dataset, args.samples, args.real_seed + 1, work, env)
    row = score(a, b, int(dataset.get("max_sources", 10)))
    row.update(setup=f"real vs real ({dataset['array']})", seed="-", minutes=float("nan"))
    return row


def verdict(row: dict) -> str:
    if row["setup"] not in TARGETS:
        return ""
    max_min, bounds = TARGETS[row["setup"]]
    misses = [f"{k} {row[k]:.3g} > {v:g}" for k, v in bounds.items() if k != "psd_rate" and not row[k] <= v]
    if "psd_rate" in bounds and row["psd_rate"] < bounds["psd_rate"]:
        misses.append(f"psd_rate {row['psd_rate']:.3g} < 1")
    if row["minutes"] > max_min:
        misses.append(f"{row['minutes']:.1f} min > {max_min:g}")
    return "meets all targets" if not misses else "misses: " + "; ".join(misses)


def fmt(v) -> str:
    if isinstance(v, float):
        return "-" if np.isnan(v) else f"{v:.3f}"
    return str(v)


def table(rows: list[dict]) -> str:
    head = "| setup | seed | " + " | ".join(COLUMNS) + " | train min | targets |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for r in rows:
        lines.append(f"| {r['setup']} | {r['seed']} | " + " | ".join(fmt(r[c]) for c in COLUMNS)
                     + f" | {fmt(r['minutes'])} | {verdict(r)} |")
    by_setup: dict[str, list[dict]] = {}
    for r in rows:
        if r["seed"] != "-":
            by_setup.setdefault(r["setup"], []).append(r)
    if any(len(v) > 1 for v in by_setup.values()):
        lines += ["", "| setup | seeds | " + " | ".join(f"mean {c}" for c in COLUMNS) + " | worst c2st | mean min |",
                  "|" + "---|" * (len(COLUMNS) + 4)]
        for name, rs in by_setup.items():
            means = " | ".join(fmt(statistics.fmean(r[c] for r in rs)) for c in COLUMNS)
            lines.append(f"| {name} | {len(rs)} | {means} | {fmt(max(r['c2st'] for r in rs))} | "
                         f"{fmt(statistics.fmean(r['minutes'] for r in rs))} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=400, help="generated and real CSMs compared (default 400)")
    p.add_argument("--real-seed", type=int, default=11, help="simulation seed of the fresh real set (default 11)")
    p.add_argument("--overrides", nargs="*", default=[], help="extra overrides for every setup")
    p.add_argument("--work", default=None, help="folder for runs, sets and the rows so far (default: a temporary folder)")
    p.add_argument("--out", default=None, help="also write the table (Markdown) here")
    args = p.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="csm_quality_"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # rows accumulate in WORK/rows.jsonl, so several invocations into one --work folder make one table
    store = work / "rows.jsonl"
    rows = [json.loads(line) for line in store.read_text().splitlines()] if store.exists() else []
    floors = {}
    for setup in args.setups:
        for seed in args.seeds:
            try:
                row = run_one(setup, seed, args, work, env)
                row["command"] = f"--setups {' '.join(args.setups)} --seeds {' '.join(map(str, args.seeds))}" + (
                    f" --overrides {' '.join(args.overrides)}" if args.overrides else "")
            except RuntimeError as exc:
                print(f"{setup} seed {seed}: FAILED: {exc}", file=sys.stderr)
                continue
            rows = [r for r in rows if (r["setup"], r["seed"]) != (setup, seed)] + [row]
            with store.open("a") as fh:
                fh.write(json.dumps(row, default=str) + "\n")
            print(f"{setup} seed {seed}: " + ", ".join(f"{c} {row[c]:.3f}" for c in COLUMNS)
                  + f", {row['minutes']:.1f} min  {verdict(row)}", flush=True)
    for row in rows:  # a floor row for every array in the table
        key = json.dumps({k: row["dataset"].get(k) for k in SIM_KEYS}, sort_keys=True, default=str)
        if key not in floors:
            floors[key] = floor_row(row["dataset"], args, work, env)
    text = table(rows + list(floors.values()))
    extra = f" --overrides {' '.join(args.overrides)}" if args.overrides else ""
    commands = sorted({r.get("command", "") for r in rows} | {f"--setups {' '.join(args.setups)} --seeds {' '.join(map(str, args.seeds))}{extra}"})
    info = ("; ".join(f"`python benchmarks/csm_quality.py {c} --work WORK`" for c in commands if c)
            + f" ({args.samples} generated vs {args.samples} fresh real CSMs, real seed {args.real_seed})")
    print("\n" + info + "\n\n" + text)
    if args.out:
        Path(args.out).write_text(f"# CSM quality\n\n{info}\n\n{text}\n")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
