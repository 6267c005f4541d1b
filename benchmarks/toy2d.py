#!/usr/bin/env python
"""PacGAN 2D benchmark (ring of 8 / grid of 25 Gaussians) in the layout of the PacGAN table.

Each (row, experiment, seed) is one ``gan train`` in a fresh subprocess:

    gan train experiment=ring train.seed=S hydra.run.dir=OUT/ring_sS train.progress=false [--steps] [--extra] [row]

The final row of its ``metrics.jsonl`` gives ``modes``, ``high_quality`` (fraction) and
``reverse_kl``; the subprocess wall time gives minutes per run. While a run trains, the script
notes when each evaluation row appears in ``metrics.jsonl``, so *minutes to the bar* is the wall
time from the process's launch to the first evaluation that meets PacGAN4's bar (all 8 / 25
modes with >= 93% high-quality samples; PacGAN4: 7.8 / 95.9% and 24.8 / 93.6%).

``--reference`` adds a row trained by ``benchmarks/toy2d_reference.py``: the same networks, loss,
optimizer, batch, steps and EMA, written the way keras-io's GAN examples are (a ``train_step`` and
a default ``fit``), launched and timed the same way, so time to quality is a ratio measured in one
run. ``--pin 0 1`` runs two runs at a time, each on its own core (``taskset``); the work list puts
a seed's runs of every row next to each other, so ours and the reference share the machine alike.

The script prints the PacGAN-layout table (mean +- std over seeds, under the published rows of
DESIGN.md section 5), a per-seed table, and a summary (worst seed, seeds that end at the bar,
minutes to the bar), and writes them to ``OUT/toy2d_table.md`` (per-run results: ``OUT/runs.jsonl``).

Examples:
    python benchmarks/toy2d.py --seeds 0 1 2 3 4 5 6 7 8 9 --reference --pin 0 1 --out /tmp/toy2d
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
import queue
import shutil
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_model, usable_cores  # noqa: E402

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
BAR_HQ = 0.93  # the bar: every mode and >= 93% high quality (PacGAN4's grid: 24.8 modes, 93.6%)
BASE_ROW = "gan-cli"
REF_ROW = "keras-io"
REFERENCE = Path(__file__).resolve().parent / "toy2d_reference.py"


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
    p.add_argument("--reference", action="store_true",
                   help="add a row trained by benchmarks/toy2d_reference.py (keras-io style) on the same settings")
    p.add_argument("--reference-seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="train the --reference row on these seeds only (default: every seed of --seeds)")
    p.add_argument("--out", default="benchmarks/out/toy2d", help="output folder (default benchmarks/out/toy2d)")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which a run is killed")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at the same time (default 1; on a 2-core CPU, 2 finishes a table in about "
                        "half the time, and each run's minutes/run then counts the shared cores)")
    p.add_argument("--pin", type=int, nargs="+", default=None, metavar="CORE",
                   help="run each run on one of these cores (taskset -c), one run per core at a time; "
                        "sets --jobs to their number")
    p.add_argument("--gan", default=None,
                   help="command that runs the CLI (default: this Python with -m gan_cli.cli.main)")
    args = p.parse_args(argv)
    if not args.seeds:
        p.error("--seeds needs at least one seed")
    if args.pin is not None:
        if len(set(args.pin)) != len(args.pin) or min(args.pin) < 0:
            p.error(f"--pin wants distinct core numbers, got {args.pin}")
        if shutil.which("taskset") is None:
            p.error("--pin needs taskset (util-linux)")
        args.jobs = len(args.pin)
    rows = [] if args.no_base else [(BASE_ROW, [])]
    for spec in args.row:
        name, sep, overrides = spec.partition("=")
        name = name.strip()
        if not sep or not name or not overrides.strip():
            p.error(f"--row wants NAME=OVERRIDES, got {spec!r}")
        if any(name == r[0] for r in rows) or "/" in name or name == REF_ROW:
            p.error(f"--row name {name!r} is repeated, reserved or contains '/'")
        rows.append((name, shlex.split(overrides)))
    if args.reference:
        rows.append((REF_ROW, []))
    if args.reference_seeds is not None and not set(args.reference_seeds) <= set(args.seeds):
        p.error("--reference-seeds must be among --seeds")
    if not rows:
        p.error("nothing to run: --no-base without --row or --reference")
    args.rows = rows
    return args


def run_dir(out: Path, row: str, experiment: str, seed: int) -> Path:
    base = out if row == BASE_ROW else out / row
    return base / f"{experiment}_s{seed}"


def read_metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def meets_bar(row: dict, experiment: str) -> bool:
    return (experiment in MODES and row.get("modes") is not None and row["modes"] >= MODES[experiment]
            and row.get("high_quality") is not None and row["high_quality"] >= BAR_HQ)


def _train(cmd: list[str], folder: Path, env: dict, timeout: float | None) -> tuple[int, list[str], float, dict]:
    """Run ``cmd``; return (exit code, stderr tail, wall seconds, {step: seconds from launch to its
    metrics.jsonl row}) by watching ``folder/metrics.jsonl`` every 0.2 s while it runs."""
    seen: dict[int, float] = {}

    def poll(t0):
        now = time.time() - t0
        for r in read_metrics(folder):
            seen.setdefault(int(r["step"]), round(now, 2))

    t0 = time.time()
    with open(folder.parent / f".{folder.name}.stderr", "w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        rc = None
        while rc is None:
            try:
                rc = proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if timeout is not None and time.time() - t0 > timeout:
                    proc.kill()
                    proc.wait()
                    rc = -1
            poll(t0)
        wall = time.time() - t0
        err.seek(0)
        tail = err.read().strip().splitlines()[-5:]
    if rc == -1 and timeout is not None and wall > timeout:
        tail = [f"killed after {timeout:g} s (--timeout)"]
    return rc, tail, wall, seen


def run_one(args, row: str, row_overrides: list[str], experiment: str, seed: int, cores: queue.Queue | None) -> dict:
    """Train one run (or reuse a finished one) and return its result record."""
    folder = run_dir(Path(args.out), row, experiment, seed)
    overrides = [f"experiment={experiment}", f"train.seed={seed}"]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    overrides += list(args.extra) + list(row_overrides)
    if row == REF_ROW:
        cmd = [sys.executable, str(REFERENCE), "--out", str(folder)] + overrides
        shown = ["python", "benchmarks/toy2d_reference.py", "--out", str(folder)] + overrides
    else:
        overrides[2:2] = [f"hydra.run.dir={folder}", "train.progress=false"]
        gan = shlex.split(args.gan) if args.gan else [sys.executable, "-m", "gan_cli.cli.main"]
        cmd = gan + ["train"] + overrides
        shown = ["gan", "train"] + overrides
    record = {"row": row, "experiment": experiment, "seed": seed, "dir": str(folder),
              "command": " ".join(shlex.quote(o) for o in shown)}
    meta_path = folder / "bench.json"
    if not args.force and (folder / "DONE").exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        rows = read_metrics(folder)
        if meta.get("command") == record["command"] and rows:
            print(f"[reuse] {row} {experiment} seed {seed}: {folder}", file=sys.stderr, flush=True)
            return _result(record, rows, meta, reused=True)
    if folder.exists():
        shutil.rmtree(folder)  # stale, half-written or trained with another command line: start clean
    folder.mkdir(parents=True)
    core = cores.get() if cores is not None else None
    try:
        if core is not None:
            cmd = ["taskset", "-c", str(core)] + cmd
        print(f"[run] {row} {experiment} seed {seed}{'' if core is None else f' (core {core})'}: "
              f"{record['command']}", file=sys.stderr, flush=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        rc, tail, wall, seen = _train(cmd, folder, env, args.timeout)
    finally:
        if core is not None:
            cores.put(core)
    rows = read_metrics(folder) if rc == 0 else []
    if not rows:
        print(f"[fail] {row} {experiment} seed {seed} (exit {rc}):\n  " + "\n  ".join(tail),
              file=sys.stderr, flush=True)
        return {**record, "wall_s": wall, "ok": False, "error": " | ".join(tail)}
    meta = {"command": record["command"], "wall_s": wall, "core": core,
            "eval_wall_s": {str(k): v for k, v in sorted(seen.items())}}
    meta_path.write_text(json.dumps(meta) + "\n")
    (folder / "DONE").touch()
    result = _result(record, rows, meta, reused=False)
    bar = "never" if result["bar_s"] is None else f"{result['bar_s'] / 60:.1f} min (step {result['bar_step']})"
    print(f"[done] {row} {experiment} seed {seed}: modes {result['modes']:.0f}/{MODES.get(experiment, '?')}, "
          f"HQ {100 * result['high_quality']:.1f}%, rev-KL {_fmt(result['reverse_kl'], 3)}, "
          f"{wall / 60:.1f} min, bar at {bar}", file=sys.stderr, flush=True)
    return result


def _result(record: dict, rows: list[dict], meta: dict, reused: bool) -> dict:
    """The record of a finished run: its final evaluation, wall time and the first evaluation at the bar."""
    times = meta.get("eval_wall_s", {})
    first = next((r for r in rows if meets_bar(r, record["experiment"])), None)
    bar_s = None if first is None else times.get(str(int(first["step"])))
    return {**record, **_pick(rows[-1]), "wall_s": meta["wall_s"], "ok": True, "reused": reused,
            "bar_step": None if first is None else int(first["step"]), "bar_s": bar_s,
            "evals": [{"step": int(r["step"]), "modes": r.get("modes"), "high_quality": r.get("high_quality"),
                       "wall_s": times.get(str(int(r["step"])))} for r in rows]}


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


def seeds_of(args, row: str) -> list[int]:
    """The seeds ``row`` is trained on (``--reference-seeds`` for the reference row)."""
    if row == REF_ROW and args.reference_seeds is not None:
        return [s for s in args.seeds if s in args.reference_seeds]
    return list(args.seeds)


def _label(row: str) -> str:
    if row == BASE_ROW:
        return row
    return "keras-io-style reference" if row == REF_ROW else f"gan-cli + {row}"


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


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
        who = "" if row == REF_ROW else "ours, "
        lines.append(f"| {_label(row)} ({who}n={len(seeds_of(args, row))}) | " + " | ".join(cells)
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
    per_seed = ["", "Final evaluation per seed (modes / HQ %):", "",
                "| row | experiment | " + " | ".join(f"seed {s}" for s in args.seeds) + " |",
                "|---|---|" + "---|" * len(args.seeds)]
    summary = ["", f"Summary (bar: every mode and >= {100 * BAR_HQ:.0f}% HQ; minutes from launch):", "",
               "| row | experiment | modes | HQ | worst seed | final at bar | min to bar: mean (worst) | min/run |",
               "|---|---|---|---|---|---|---|---|"]
    ratios = []
    for exp in args.experiments:
        to_bar: dict[str, dict[int, float]] = {}  # row -> {seed: seconds from launch to the bar}
        walls: dict[str, dict[int, float]] = {}
        for row, _ in args.rows:
            by_seed = {r["seed"]: r for r in results if r["row"] == row and r["experiment"] == exp}
            if not by_seed:
                continue
            cells = []
            for s in args.seeds:
                r = by_seed.get(s)
                cells.append("–" if r is None else "failed" if not r["ok"] else
                             f"{r['modes']:.0f} / {100 * r['high_quality']:.1f}")
            per_seed.append(f"| {_label(row)} | {exp} | " + " | ".join(cells) + " |")
            ok = [r for r in by_seed.values() if r["ok"]]
            if not ok:
                continue
            worst = min(ok, key=lambda r: (r["modes"], r["high_quality"]))
            at_bar = sum(meets_bar(r, exp) for r in ok)
            reached = [r["bar_s"] for r in ok if r["bar_s"] is not None]
            never = len(ok) - len(reached)
            bar_cell = "never" if not reached else (
                f"{_mean(reached) / 60:.2f} ({max(reached) / 60:.2f})"
                + (f"; {never} seed(s) never" if never else ""))
            to_bar[row] = {r["seed"]: r["bar_s"] for r in ok if r["bar_s"] is not None}
            walls[row] = {r["seed"]: r["wall_s"] for r in ok}
            summary.append(
                f"| {_label(row)} | {exp} | {mean_std([r['modes'] for r in ok], 2)} | "
                f"{mean_std([r['high_quality'] for r in ok], 1, 100.0)}% | "
                f"seed {worst['seed']}: {worst['modes']:.0f} / {100 * worst['high_quality']:.1f}% | "
                f"{at_bar} of {len(ok)} | {bar_cell} | {mean_std([r['wall_s'] for r in ok], 2, 1 / 60)} |")
        # the ratio over the seeds both rows trained and brought to the bar (the same seeds, side by side)
        common = sorted(set(to_bar.get(REF_ROW, {})) & set(to_bar.get(BASE_ROW, {})))
        if common:
            ref, ours = (_mean([to_bar[r][s] for s in common]) for r in (REF_ROW, BASE_ROW))
            ref_w, ours_w = (_mean([walls[r][s] for s in common]) for r in (REF_ROW, BASE_ROW))
            ratios.append(f"{exp} {ref / ours:.2f}x ({ref / 60:.2f} / {ours / 60:.2f} min; whole run "
                          f"{ref_w / ours_w:.2f}x; seeds {' '.join(map(str, common))})")
    foot = [
        "",
        f"Mean ± std over seeds {' '.join(map(str, args.seeds))}"
        + (f" (reference: {' '.join(map(str, seeds_of(args, REF_ROW)))})" if args.reference_seeds else "")
        + "; final evaluation of each run, "
        "2,500 generated samples (PacGAN protocol: HQ = within 3 std of the nearest mean, a mode counts when it "
        "is the nearest mean of >= 1 HQ sample, rev-KL = KL(mode histogram of HQ samples || uniform)). "
        "min/run = wall time of the whole training subprocess (start-up and evaluation included); "
        "min to bar = wall time from its launch to the first evaluation at the bar.",
        "Rows: " + "; ".join(
            (f"{_label(r)}: python benchmarks/toy2d_reference.py experiment=<ring|grid>" if r == REF_ROW else
             f"{_label(r)}: experiment=<ring|grid>" + (" " + " ".join(o) if o else "")) for r, o in args.rows)
        + (f"; every run also: {' '.join(args.extra)}" if args.extra else "")
        + (f"; train.steps={args.steps}" if args.steps is not None else "") + ".",
    ]
    if ratios:
        foot.append("Time to quality, keras-io-style reference / gan-cli (mean minutes to the bar, same run): "
                    + ", ".join(ratios) + ".")
    foot += [
        f"Machine: {platform.node()}, {cpu_model()}, {os.cpu_count()} CPUs ({usable_cores()} usable by this "
        f"process)" + (f", runs pinned to cores {' '.join(map(str, args.pin))} (one run per core)" if args.pin else
                       f", {args.jobs} run(s) at a time") + ", load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}.",
    ] + [f"Note: {n}." for n in notes]
    return "\n".join(lines + extra + per_seed + summary + foot) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.jobs < 1:
        print("error: --jobs must be >= 1", file=sys.stderr)
        return 2
    cores = None
    if args.pin is not None:
        cores = queue.Queue()
        for c in args.pin:
            cores.put(c)
    # a seed's runs of every row next to each other: with two at a time, ours and the reference train side by side
    work = [(row, overrides, exp, seed) for exp in args.experiments for seed in args.seeds
            for row, overrides in args.rows if row != REF_ROW or seed in seeds_of(args, row)]
    results = []
    with open(out / "runs.jsonl", "a") as log, ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # each run is its own subprocess; threads only wait on them
        for result in pool.map(lambda w: run_one(args, *w, cores), work):
            results.append(result)
            log.write(json.dumps(result) + "\n")
            log.flush()
    table = build_table(args, results)
    (out / "toy2d_table.md").write_text(table)
    print(table)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
