#!/usr/bin/env python
"""Image experiments on scikit-learn's 8x8 digits (offline): what the documented configs reach.

Each row is one ``gan train`` in a fresh subprocess:

    gan train OVERRIDES hydra.run.dir=OUT/NAME train.progress=false train.seed=SEED

The last row of its ``metrics.jsonl`` gives ``fcd`` (Frechet distance in the metric classifier's
feature space), ``fcd_floor`` (held-out real digits: what a perfect generator scores),
``fcd_noise`` (real digits + Gaussian noise of std 0.3 on the [-1, 1] scale), ``classes_covered``
(of 10), ``label_accuracy`` (conditional runs: the classifier agrees with the requested label) and
the subprocess wall time gives minutes (including the one-off metric-classifier training when its
cache is empty). The script prints a Markdown table and writes it to ``OUT/images_table.md``.

Examples:
    python benchmarks/images.py                                  # all rows into bench/images
    taskset -c 1 python benchmarks/images.py --rows digits_cgan  # one row, pinned to one core
    python benchmarks/images.py --seed 1 --out /tmp/img_bench --extra train.steps=500

A finished run (``DONE`` in its folder and the same command in ``bench_cmd.txt``) is reused, so an
interrupted benchmark continues where it stopped; ``--force`` retrains everything.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_model, usable_cores  # noqa: E402

# (name, overrides, what it is). All run offline on digits.
ROWS = [
    ("digits_cgan", "experiment=digits_cgan",
     "conditional DCGAN (projection D), 3000 steps"),
    ("digits_dcgan", "experiment=digits_cgan model.conditional=false",
     "the same DCGAN, unconditional"),
    # The authors' MNIST config (goodfeli/adversarial mnist.yaml) at the paper's lr 0.1, on digits, with the
    # paper's Parzen-window log-likelihood of the held-out digits
    ("goodfellow2014_digits", "experiment=goodfellow2014 dataset=digits metrics.parzen=true",
     "2014 paper's MLP G / maxout D as the authors ran it (SGD lr 0.1), on digits, 4000 steps"),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS], choices=[r[0] for r in ROWS],
                   help="rows to run (default: all)")
    p.add_argument("--seed", type=int, default=0, help="train.seed of every run (default 0)")
    p.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra Hydra overrides for every run (e.g. --extra train.steps=500)")
    p.add_argument("--out", type=Path, default=Path("bench/images"), help="folder for the runs and the table")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    return p.parse_args(argv)


def gan_command() -> list[str]:
    """The installed ``gan`` entry point, or this interpreter running the CLI module."""
    exe = shutil.which("gan")
    return [exe] if exe else [sys.executable, "-m", "gan_cli.cli.main"]


def run_row(name: str, overrides: str, args: argparse.Namespace) -> dict:
    run_dir = args.out / name
    cmd = ["train", *shlex.split(overrides), f"train.seed={args.seed}", *args.extra, "train.progress=false",
           f"hydra.run.dir={run_dir}"]
    cmd_file = run_dir / "bench_cmd.txt"
    shown = "gan " + " ".join(shlex.quote(c) for c in cmd)
    if not args.force and (run_dir / "DONE").is_file() and cmd_file.is_file() and cmd_file.read_text() == shown:
        print(f"[{name}] reusing {run_dir}", file=sys.stderr)
        meta = json.loads((run_dir / "bench_meta.json").read_text())
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print(f"[{name}] {shown}", file=sys.stderr)
        t0 = time.time()
        proc = subprocess.run([*gan_command(), *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        minutes = (time.time() - t0) / 60.0
        if proc.returncode != 0:
            tail = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
            print(f"[{name}] FAILED (exit {proc.returncode}): {' | '.join(tail)}", file=sys.stderr)
            return {"name": name, "command": shown, "failed": True}
        meta = {"minutes": minutes}
        (run_dir / "bench_meta.json").write_text(json.dumps(meta))
        cmd_file.write_text(shown)
    lines = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"name": name, "command": shown, **json.loads(lines[-1]), **meta}


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict]) -> str:
    head = ("| experiment | steps | fcd | fcd floor (held-out real) | fcd noisy real | classes covered (of 10) "
            "| label accuracy | precision / recall | Parzen log-likelihood | minutes |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    body = []
    for r in results:
        if r.get("failed"):
            body.append(f"| {r['name']} | failed | | | | | | | | |")
            continue
        acc = fmt(r.get("label_accuracy"), ".1%") if r.get("label_accuracy") is not None else "n/a"
        body.append(f"| {r['name']} | {r['step']} | {fmt(r.get('fcd'), '.2f')} | {fmt(r.get('fcd_floor'), '.2f')} "
                    f"| {fmt(r.get('fcd_noise'), '.2f')} | {fmt(r.get('classes_covered'), '.0f')} | {acc} "
                    f"| {fmt(r.get('precision'), '.2f')} / {fmt(r.get('recall'), '.2f')} "
                    f"| {fmt(r.get('parzen_ll'), '.1f')} | {r['minutes']:.1f} |")
    return head + "\n".join(body) + "\n"


def machine() -> str:
    return f"{usable_cores()} CPU core(s) usable ({cpu_model()}), Python {platform.python_version()}, {platform.system()}"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_row(name, overrides, args) for name, overrides, _ in ROWS if name in args.rows]
    text = table(results)
    commands = "\n".join(f"- `{r['name']}`: `{r['command']}`" for r in results)
    report = (f"{text}\nCommands (seed {args.seed}):\n{commands}\n\nMachine: {machine()}; "
              f"minutes = wall time of the whole `gan train` subprocess.\n")
    (args.out / "images_table.md").write_text(report)
    print(report)
    return 1 if any(r.get("failed") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
