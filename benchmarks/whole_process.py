"""``throughput.py --whole-process``: what a user waits for, whole process against whole process.

    python benchmarks/throughput.py --whole-process                       # 2,000 and 10,000 steps, 3 repeats
    python benchmarks/throughput.py --whole-process --whole-steps 10000 --repeats 5 --out benchmarks/results/throughput_whole_process.md
    python benchmarks/throughput.py --whole-process --sweep-jobs 8        # also the per-job overhead of a joblib sweep
    python benchmarks/throughput.py --whole-process --whole-steps 10000 --busy-processes 1   # one other busy job

Sides, each a fresh process started from the command line with the caller's environment:

* ``gan train experiment=bench_ring train.steps=N hydra.run.dir=...`` as a user types it: defaults otherwise,
  the report on (``train.report=true``), its progress bar on (with ``TQDM_MININTERVAL=0 TQDM_MINITERS=1`` and a
  ``TQDM_BAR_FORMAT`` showing tqdm's clock, so that every update is printed with the time it happened and the end
  of training can be timed; a few hundred short lines on stderr);
* ``python benchmarks/keras_io_ring.py --steps N``: the keras-io-style script on the same networks, data and
  batch (a ``keras.Model`` with a Python critic loop, ``compile`` and ``fit`` with Keras's defaults, one numpy
  array); it trains ``N`` rounded down to whole epochs of 78 steps (1,950 for 2,000; 9,984 for 10,000).

The sides alternate (the order reversed every repeat); each phase and the total are the median over the
repeats, and the ratio is the reference's median total over ``gan train``'s. Phases, from the times at which
the parent reads each process's output lines:

* to first step: command -> the end of the first training step (``gan train``: of its first compiled call,
  ``train.steps_per_execution`` = 50 steps; the reference: of its first step);
* training: first step -> last step (``gan train``: its progress bar at N/N; the reference: ``fit`` returned);
* evaluation + report: last step -> the process's last line (``gan train``: final evaluation, checkpoint,
  ``done:``, DONE and the start of the background report; the reference: 2,500 samples and the generator
  written);
* exit: last line -> the process has exited;
* CPU: the process's user + system CPU seconds (all threads; ``gan train``'s background report process is
  not a child it waits for, so it is not counted here: see "report ready").

``gan train`` draws its report in a process of its own after DONE (``gan_cli/report/background.py``);
"report ready" is the time from the command until ``report.html`` is complete. The benchmark waits for it
before starting the next process, so that the report never competes with a timed process.

``--sweep-jobs K``: ``gan train -m hydra/launcher=joblib hydra.launcher.n_jobs=1 experiment=bench_ring
train.steps=S train.seed=0,...,K-1`` (jobs one after another, each in a process of its own, report on) against
one single ``gan train`` of the same job; the per-job overhead is the sweep's wall time / K minus the single
job's training phase, next to the single process's own overhead (its total minus its training phase).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# gan train's progress bar in the benchmark (TQDM_BAR_FORMAT): steps done and tqdm's own clock, which gives the
# time of each update however late the parent reads the line
BAR_FORMAT = "{desc}: {n}/{total} elapsed {elapsed_s:.3f}"
PROGRESS = re.compile(r"(\d+)/(\d+) elapsed (\d+\.\d+)")


def gan_command() -> list[str]:
    script = Path(sys.executable).with_name("gan")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gan_cli.cli.main"]


def _read_lines(proc: subprocess.Popen, t0: float):
    """Yield (seconds since t0, line) for every line (``\\n`` or ``\\r`` ended) of the process's stderr."""
    buf = b""
    while True:
        chunk = os.read(proc.stderr.fileno(), 65536)
        now = time.time() - t0
        if not chunk:
            break
        buf += chunk
        *lines, buf = re.split(rb"[\r\n]", buf)
        for line in lines:
            if line.strip():
                yield now, line.decode(errors="replace")
    if buf.strip():
        yield time.time() - t0, buf.decode(errors="replace")


def _finish(proc: subprocess.Popen, t0: float) -> tuple[float, float]:
    """(seconds since t0 at exit, user + system CPU seconds) of the process."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.time() - t0, usage.ru_utime + usage.ru_stime


def run_gan(steps: int, folder: Path, overrides: list[str]) -> dict:
    run_dir = folder / "gan"
    cmd = [*gan_command(), "train", "experiment=bench_ring", f"train.steps={steps}", *overrides,
           f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1", "TQDM_BAR_FORMAT": BAR_FORMAT}
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=folder)
    marks, tail = {}, []
    for now, line in _read_lines(proc, t0):
        tail = (tail + [line])[-30:]
        marks["last_line"] = now
        if line.startswith("gan-cli:"):
            marks.setdefault("setup", now)
        match = PROGRESS.search(line)
        if match:
            done, total, elapsed = int(match.group(1)), int(match.group(2)), float(match.group(3))
            # when the bar started: a line is read at or after the moment it was written, so the earliest
            # (read time - elapsed) of all lines is the closest to the truth
            marks["bar"] = min(marks.get("bar", now), now - elapsed)
            if done > 0:
                marks.setdefault("first_elapsed", elapsed)
            if done >= total:
                marks.setdefault("trained_elapsed", elapsed)
        if line.startswith("done:"):
            marks["evaluated"] = now
    marks["exit"], cpu = _finish(proc, t0)
    if proc.returncode != 0 or "trained_elapsed" not in marks:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    marks["first_step"] = marks["bar"] + marks["first_elapsed"]
    marks["trained"] = marks["bar"] + marks["trained_elapsed"]
    from gan_cli.report import background

    background.wait(run_dir, timeout=900)
    html = run_dir / "report.html"
    marks["report_ready"] = html.stat().st_mtime - t0 if html.is_file() else float("nan")
    return dict(marks, cpu=cpu)


def run_reference(steps: int, folder: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "keras_io_ring.py"), "--steps", str(steps),
           "--out", str(folder / "reference")]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=folder)
    marks, tail = {}, []
    for now, line in _read_lines(proc, t0):
        tail = (tail + [line])[-30:]
        marks["last_line"] = now
        if line.startswith("PHASE "):
            _, name, stamp = line.split()
            marks[name] = float(stamp) - t0
    marks["exit"], cpu = _finish(proc, t0)
    if proc.returncode != 0 or "written" not in marks:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    marks["last_line"] = max(marks["last_line"], marks["written"])
    return dict(marks, cpu=cpu)


def phases(marks: dict) -> dict[str, float]:
    """The reported phases (seconds) of one run's marks."""
    out = {"to first step": marks["first_step"], "training": marks["trained"] - marks["first_step"],
           "evaluation + report": marks["last_line"] - marks["trained"], "exit": marks["exit"] - marks["last_line"],
           "total": marks["exit"], "CPU s": marks["cpu"]}
    if "report_ready" in marks:
        out["report ready"] = marks["report_ready"]
    if "setup" in marks:
        out["to start-up line"] = marks["setup"]
    return out


def _cell(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.1f} ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else f"{med:.1f}"


COLUMNS = ["to start-up line", "to first step", "training", "evaluation + report", "exit", "total", "CPU s",
           "report ready"]


def compare(steps: int, repeats: int, overrides: list[str], log) -> list[str]:
    """Markdown rows (two sides) and the ratio line for ``steps`` steps."""
    runs: dict[str, list[dict]] = {"reference": [], "gan train": []}
    for r in range(repeats):
        for side in (("reference", "gan train") if r % 2 == 0 else ("gan train", "reference")):
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory(prefix="whole_process_") as tmp:
                marks = run_gan(steps, Path(tmp), overrides) if side == "gan train" else run_reference(steps, Path(tmp))
            p = phases(marks)
            runs[side].append(p)
            log(f"  {steps} steps, repeat {r + 1}, {side}: " + ", ".join(f"{k} {v:.1f}" for k, v in p.items())
                + f" (load average before: {load:.2f})")
    rows = []
    for side, results in runs.items():
        cells = [_cell([p[c] for p in results]) if c in results[0] else "" for c in COLUMNS]
        rows.append(f"| {steps} | {side} | " + " | ".join(cells) + " |")
    ref = statistics.median(p["total"] for p in runs["reference"])
    gan = statistics.median(p["total"] for p in runs["gan train"])
    pairs = [a["total"] / b["total"] for a, b in zip(runs["reference"], runs["gan train"])]
    ratio = (f"{steps} steps: reference {ref:.1f} s / gan train {gan:.1f} s = **{ref / gan:.2f}x** "
             f"(repeat by repeat: {', '.join(f'{x:.2f}x' for x in pairs)}); per CPU second: "
             f"{statistics.median(p['CPU s'] for p in runs['reference']) / statistics.median(p['CPU s'] for p in runs['gan train']):.2f}x")
    return rows + [ratio]


def sweep_overhead(jobs: int, steps: int, log) -> list[str]:
    """Lines on the per-job overhead of a joblib sweep of ``jobs`` short jobs."""
    job = ["experiment=bench_ring", f"train.steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}"]
    with tempfile.TemporaryDirectory(prefix="whole_process_sweep_") as tmp:
        single = phases(run_gan(steps, Path(tmp), job[2:]))
        sweep = Path(tmp) / "sweep"
        cmd = [*gan_command(), "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", *job,
               "train.progress=false", f"train.seed={','.join(str(i) for i in range(jobs))}", f"hydra.sweep.dir={sweep}"]
        t0 = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp)
        wall = time.time() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        done = sum((sweep / str(i) / "DONE").is_file() and (sweep / str(i) / "report.html").is_file() for i in range(jobs))
    per_job = wall / jobs
    log(f"  sweep of {jobs}: {wall:.1f} s ({done} jobs with DONE and report.html); single job: "
        + ", ".join(f"{k} {v:.1f}" for k, v in single.items()))
    return [f"| {jobs} x {steps} steps (joblib, n_jobs=1, report on) | {wall:.1f} | {per_job:.1f} | "
            f"{single['training']:.1f} | {per_job - single['training']:.1f} | {single['total']:.1f} | "
            f"{single['total'] - single['training']:.1f} |"]


def main(args, command: str) -> int:
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy_processes)]
    try:
        return _main(args, command)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


def _main(args, command: str) -> int:
    from machine_info import cpu_model, usable_cores

    out_lines, runs = [], []

    def log(line: str) -> None:
        print(line, flush=True)
        runs.append(line.strip())

    busy = f"; {args.busy_processes} busy-looping processes running throughout" if args.busy_processes else ""
    head = (f"device: CPU {cpu_model()}, {usable_cores()} of {os.cpu_count()} cores; load average at start "
            f"{os.getloadavg()[0]:.2f} (other jobs share the machine: see the per-run lines){busy}")
    log(head)
    table = ["| steps | side | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (2 + len(COLUMNS))]
    ratios = []
    for steps in args.whole_steps:
        rows = compare(steps, args.repeats, list(args.overrides), log)
        table += rows[:-1]
        ratios.append(rows[-1])
    out_lines += [f"Command: `{command}`", "", f"- {head}",
                  f"- {args.repeats} repeats per side, alternating; seconds: median (min-max); 'gan train' = "
                  "`gan train experiment=bench_ring train.steps=N`, 'reference' = `benchmarks/keras_io_ring.py "
                  "--steps N` (1,950 / 9,984 steps: whole epochs)", "", *table, "", *[f"- {r}" for r in ratios]]
    if args.sweep_jobs:
        out_lines += ["", f"Sweep overhead (seconds): a joblib sweep of {args.sweep_jobs} short jobs against one "
                      "`gan train` of the same job", "",
                      "| sweep | sweep wall | per job | single job's training | per-job overhead | single process total "
                      "| single process overhead |", "|---|---|---|---|---|---|---|",
                      *sweep_overhead(args.sweep_jobs, args.sweep_steps, log)]
    out_lines += ["", "Every run (seconds; the load average is the machine's 1-minute figure before the run):", "",
                  *[f"- {line}" for line in runs[1:]]]
    report = "\n".join(out_lines)
    print("\n" + report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return 0
