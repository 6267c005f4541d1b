#!/usr/bin/env python
"""PacGAN 2D benchmark (ring of 8 / grid of 25 Gaussians) in the layout of the PacGAN table.

Each (row, experiment, seed) is one ``gan train`` in a fresh subprocess:

    gan train experiment=ring train.seed=S hydra.run.dir=OUT/ring_sS train.progress=false [--steps] [--extra] [row]

The final row of its ``metrics.jsonl`` gives ``modes``, ``high_quality`` (fraction) and
``reverse_kl``; the subprocess wall time gives minutes per run. The script prints a Markdown
table (mean +- std over seeds) under the published rows of DESIGN.md section 5 and writes it
to ``OUT/toy2d_table.md`` (per-run results: ``OUT/runs.jsonl``).

Examples:
    python benchmarks/toy2d.py --seeds 0 1 2 --out bench/toy2d
    python benchmarks/toy2d.py --seeds 0 1 --row "hinge=loss=hinge" --row "wgan_gp=loss=wgan_gp train.n_critic=5"
    python benchmarks/toy2d.py --seeds 0 --steps 2000 --extra train.batch_size=128 --out /tmp/quick

A finished run (``DONE`` in its folder and the same command in ``bench.json``) is reused, so an
interrupted benchmark continues where it stopped; ``--force`` retrains everything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import usable_cores  # noqa: E402

# DESIGN.md section 5 (PacGAN paper, Table 1; Unrolled GAN and VEEGAN from the VEEGAN table).
# (ring modes, ring HQ %, ring rev-KL, grid modes, grid HQ %, grid rev-KL); None = not reported.
PUBLISHED = [
    ("GAN", (6.3, 98.2, 0.45, 17.3, 94.8, 0.70)),
    ("PacGAN2", (7.9, 95.6, 0.07, 23.8, 91.3, 0.13)),
    ("PacGAN4", (7.8, 95.9, 0.07, 24.8, 93.6, 0.04)),
    ("Unrolled GAN", (7.6, 35.6, None, 23.6, 16.0, None)),
    ("VEEGAN", (8.0, 52.9, None, 24.6, 40.0, None)),
]
MODES = {"ring": 8, "grid": 25}
BASE_ROW = "gan-cli"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--experiments", nargs="+", default=["ring", "grid"],
                   help="experiment configs (conf/experiment/NAME.yaml), default ring grid")
    p.add_argument("--steps", type=int, default=None, help="override train.steps for every run")
    p.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra Hydra overrides for every run (e.g. --extra train.batch_size=128)")
    p.add_argument("--row", action="append", default=[], metavar="NAME=OVERRIDES",
                   help='an extra table row trained with these overrides on every experiment, e.g. '
                        '--row "hinge=loss=hinge" (OVERRIDES: space-separated); repeatable')
    p.add_argument("--no-base", action="store_true", help="skip the plain experiment row (only --row rows)")
    p.add_argument("--out", default="benchmarks/out/toy2d", help="output folder (default benchmarks/out/toy2d)")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which a run is killed")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at the same time (default 1; on a 2-core CPU, 2 finishes a table in about "
                        "half the time, and each run's minutes/run then counts the shared cores)")
    p.add_argument("--gan", default=None,
                   help="command that runs the CLI (default: this Python with -m gan_cli.cli.main)")
    args = p.parse_args(argv)
    if not args.seeds:
        p.error("--seeds needs at least one seed")
    rows = [] if args.no_base else [(BASE_ROW, [])]
    for spec in args.row:
        name, sep, overrides = spec.partition("=")
        name = name.strip()
        if not sep or not name or not overrides.strip():
            p.error(f"--row wants NAME=OVERRIDES, got {spec!r}")
        if any(name == r[0] for r in rows) or "/" in name:
            p.error(f"--row name {name!r} is repeated or contains '/'")
        rows.append((name, shlex.split(overrides)))
    if not rows:
        p.error("nothing to run: --no-base without --row")
    args.rows = rows
    return args


def run_dir(out: Path, row: str, experiment: str, seed: int) -> Path:
    base = out if row == BASE_ROW else out / row
    return base / f"{experiment}_s{seed}"


def final_metrics(folder: Path) -> dict | None:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[-1] if rows else None


def run_one(args, row: str, row_overrides: list[str], experiment: str, seed: int) -> dict:
    """Train one run (or reuse a finished one) and return its result record."""
    folder = run_dir(Path(args.out), row, experiment, seed)
    gan = shlex.split(args.gan) if args.gan else [sys.executable, "-m", "gan_cli.cli.main"]
    overrides = [f"experiment={experiment}", f"train.seed={seed}", f"hydra.run.dir={folder}",
                 "train.progress=false"]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    overrides += list(args.extra) + list(row_overrides)
    cmd = gan + ["train"] + overrides
    record = {"row": row, "experiment": experiment, "seed": seed, "dir": str(folder),
              "command": " ".join(["gan", "train"] + [shlex.quote(o) for o in overrides])}
    meta_path = folder / "bench.json"
    if not args.force and (folder / "DONE").exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        final = final_metrics(folder)
        if meta.get("command") == record["command"] and final is not None:
            print(f"[reuse] {row} {experiment} seed {seed}: {folder}", file=sys.stderr, flush=True)
            return {**record, **_pick(final), "wall_s": meta["wall_s"], "ok": True, "reused": True}
    if folder.exists():
        shutil.rmtree(folder)  # stale, half-written or trained with another command line: start clean
    print(f"[run] {row} {experiment} seed {seed}: {record['command']}", file=sys.stderr, flush=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        rc, tail = proc.returncode, (proc.stderr or "").strip().splitlines()[-5:]
    except subprocess.TimeoutExpired:
        rc, tail = -1, [f"killed after {args.timeout:g} s (--timeout)"]
    wall = time.time() - t0
    final = final_metrics(folder) if rc == 0 else None
    if final is None:
        print(f"[fail] {row} {experiment} seed {seed} (exit {rc}):\n  " + "\n  ".join(tail),
              file=sys.stderr, flush=True)
        return {**record, "wall_s": wall, "ok": False, "error": " | ".join(tail)}
    folder.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps({"command": record["command"], "wall_s": wall}) + "\n")
    result = {**record, **_pick(final), "wall_s": wall, "ok": True, "reused": False}
    print(f"[done] {row} {experiment} seed {seed}: modes {result['modes']:.0f}/{MODES.get(experiment, '?')}, "
          f"HQ {100 * result['high_quality']:.1f}%, rev-KL {_fmt(result['reverse_kl'], 3)}, "
          f"{wall / 60:.1f} min", file=sys.stderr, flush=True)
    return result


def _pick(final: dict) -> dict:
    out = {"step": final.get("step")}
    for key in ("modes", "high_quality", "reverse_kl", "kl", "js"):
        value = final.get(key)
        out[key] = float("inf") if value is None and key == "reverse_kl" else value
    return out


def _fmt(x, digits: int) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def mean_std(values: list[float], digits: int, scale: float = 1.0) -> str:
    """``m ± s`` over seeds (sample std), ``m`` alone for one value, ``–`` for none."""
    vals = [v * scale for v in values if v is not None]
    if not vals:
        return "–"
    if any(math.isinf(v) for v in vals):
        return "inf"
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def build_table(args, results: list[dict]) -> str:
    head = ("| model | ring modes (of 8) | ring HQ | ring rev-KL | grid modes (of 25) | grid HQ | grid rev-KL "
            "| min/run (ring / grid) |")
    lines = [head, "|" + "---|" * 8]
    for name, vals in PUBLISHED:
        cells = [_fmt(vals[0], 1), f"{vals[1]:.1f}%", _fmt(vals[2], 2),
                 _fmt(vals[3], 1), f"{vals[4]:.1f}%", _fmt(vals[5], 2)]
        lines.append(f"| {name} (published) | " + " | ".join(cells) + " | |")
    notes = []
    for row, _ in args.rows:
        cells, minutes = [], []
        for exp in ("ring", "grid"):
            runs = [r for r in results if r["row"] == row and r["experiment"] == exp]
            ok = [r for r in runs if r["ok"]]
            if not runs:
                cells += ["–", "–", "–"]
                continue
            cells += [mean_std([r["modes"] for r in ok], 1),
                      mean_std([r["high_quality"] for r in ok], 1, 100.0) + ("%" if ok else ""),
                      mean_std([r["reverse_kl"] for r in ok], 2)]
            minutes.append(mean_std([r["wall_s"] for r in ok], 1, 1 / 60))
            if len(ok) < len(runs):
                notes.append(f"{row} {exp}: {len(runs) - len(ok)} of {len(runs)} runs failed")
        label = row if row == BASE_ROW else f"gan-cli + {row}"
        lines.append(f"| {label} (ours, n={len(args.seeds)}) | " + " | ".join(cells)
                     + f" | {' / '.join(minutes) if minutes else '–'} |")
    # experiments other than ring/grid (a custom experiment file) get their own small table
    others = sorted({r["experiment"] for r in results} - {"ring", "grid"})
    extra = []
    if others:
        extra += ["", "| row | experiment | modes | HQ | rev-KL | min/run |", "|---|---|---|---|---|---|"]
        for row, _ in args.rows:
            for exp in others:
                ok = [r for r in results if r["row"] == row and r["experiment"] == exp and r["ok"]]
                extra.append(f"| {row} | {exp} | {mean_std([r['modes'] for r in ok], 1)} | "
                             f"{mean_std([r['high_quality'] for r in ok], 1, 100.0)}% | "
                             f"{mean_std([r['reverse_kl'] for r in ok], 2)} | "
                             f"{mean_std([r['wall_s'] for r in ok], 1, 1 / 60)} |")
    foot = [
        "",
        f"Ours: mean ± std over seeds {' '.join(map(str, args.seeds))}; final evaluation of each run, "
        "2,500 generated samples (PacGAN protocol: HQ = within 3 std of the nearest mean, a mode counts when it "
        "is the nearest mean of >= 1 HQ sample, rev-KL = KL(mode histogram of HQ samples || uniform)). "
        "min/run = wall time of the whole `gan train` subprocess (start-up and evaluation included).",
        "Rows: " + "; ".join(f"{r if r == BASE_ROW else 'gan-cli + ' + r}: experiment=<ring|grid>"
                             + (" " + " ".join(o) if o else "") for r, o in args.rows)
        + (f"; every run also: {' '.join(args.extra)}" if args.extra else "")
        + (f"; train.steps={args.steps}" if args.steps is not None else "") + ".",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs ({usable_cores()} usable by this process), "
        f"load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}.",
    ] + [f"Note: {n}." for n in notes]
    return "\n".join(lines + extra + foot) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.jobs < 1:
        print("error: --jobs must be >= 1", file=sys.stderr)
        return 2
    work = [(row, overrides, exp, seed) for row, overrides in args.rows
            for exp in args.experiments for seed in args.seeds]
    results = []
    with open(out / "runs.jsonl", "a") as log, ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # each run is its own `gan train` subprocess; threads only wait on them
        for result in pool.map(lambda w: run_one(args, *w), work):
            results.append(result)
            log.write(json.dumps(result) + "\n")
            log.flush()
    table = build_table(args, results)
    (out / "toy2d_table.md").write_text(table)
    print(table)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
