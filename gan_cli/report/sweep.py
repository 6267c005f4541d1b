"""``write_sweep_report(multirun_dir, sort=None)``: one row per job of a Hydra multirun.

Job folders are the numbered sub-folders (``0``, ``1``, ...) of MULTIRUN_DIR, each with
``.hydra/overrides.yaml``, ``metrics.jsonl`` and a ``DONE`` or ``FAILED`` file. A job is ``done``
(DONE), ``failed`` (FAILED, with its one-line reason), ``running`` (metrics but no end marker yet) or
``pending`` (nothing written yet); failed and unfinished jobs are listed, never dropped.

Writes MULTIRUN_DIR/sweep_report.md (also returned for printing), sweep_report.csv,
sweep_report.html (self-contained) and sweep_report.png (the sort metric against each swept parameter).
Rows are sorted by ``sort`` (best first: descending for higher-is-better metrics, else ascending);
jobs without a value for it come last, in job order.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from gan_cli.core.errors import UserError
from gan_cli.report.plots_common import (HIGHER_IS_BETTER, NOT_METRICS, fmt, metric_names, new_figure, read_overrides,
                                         read_rows, save)

DEFAULT_SORT = ("modes", "kl", "fcd", "spectrum_db")   # the data kinds' primary metrics, in this order


@dataclass
class Job:
    name: str
    path: Path
    status: str
    reason: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    final: dict = field(default_factory=dict)


def _split(override: str) -> tuple[str, str]:
    key, sep, value = override.partition("=")
    return (key, value) if sep else (override, "")


def read_jobs(multirun_dir: Path) -> list[Job]:
    jobs = []
    dirs = sorted((p for p in multirun_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)),
                  key=lambda p: int(p.name))
    for d in dirs:
        rows = read_rows(d / "metrics.jsonl")
        if (d / "FAILED").exists():
            status = "failed"
            reason = (d / "FAILED").read_text(errors="replace").strip().splitlines()
            reason = reason[0] if reason else ""
        elif (d / "DONE").exists():
            status, reason = "done", ""
        elif rows or (d / "resolved_config.yaml").exists():
            status, reason = "running", "no DONE/FAILED yet (still running, or killed)"
        else:
            status, reason = "pending", "nothing written yet"
        over = read_overrides(d) or []
        overrides = dict(_split(o) for o in over if not o.lstrip("+~").startswith("hydra"))
        jobs.append(Job(d.name, d, status, reason, overrides, rows[-1] if rows else {}))
    return jobs


def _number(value: str) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _sort(jobs: list[Job], metric: str | None) -> list[Job]:
    if metric is None:
        return jobs
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0

    def key(job: Job):
        v = job.final.get(metric)
        ok = isinstance(v, (int, float)) and math.isfinite(float(v))
        return (0 if ok else 1, sign * float(v) if ok else 0.0, int(job.name))

    return sorted(jobs, key=key)


def write_sweep_report(multirun_dir: str | Path, sort: str | None = None) -> dict[str, Path]:
    """Write the sweep report files; returns ``{"markdown", "csv", "html", "png"}`` paths (``png`` only
    when a metric and a swept parameter exist). An unknown ``sort`` metric raises a UserError."""
    root = Path(multirun_dir)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give a sweep folder written by gan train -m (multirun/DATE/TIME)")
    jobs = read_jobs(root)
    if not jobs:
        raise UserError(f"{root} has no job folders (0, 1, ...); give a sweep folder written by gan train -m "
                        "(multirun/DATE/TIME)")
    metrics = metric_names([j.final for j in jobs if j.final])
    if sort is not None and sort not in metrics and sort not in ("d_loss", "g_loss", "step"):
        raise UserError(f"--sort {sort}: no job logged that metric; use one of {', '.join(metrics) or '(none yet)'}")
    from gan_cli.report.sweep_extras import describe_search, objective_of, read_search, submitit_logs

    objective = objective_of(jobs)  # metrics.objective of a search: the natural sort key
    if sort is None and objective in metrics:
        sort = objective
    if sort is None:
        sort = next((m for m in DEFAULT_SORT if m in metrics), metrics[0] if metrics else None)
    jobs = _sort(jobs, sort)

    all_keys: list[str] = []
    for j in jobs:
        all_keys += [k for k in j.overrides if k not in all_keys]
    swept = [k for k in all_keys if len({j.overrides.get(k) for j in jobs}) > 1]
    common = [f"{k}={jobs[0].overrides[k]}" for k in all_keys if k not in swept and k in jobs[0].overrides]
    if len(jobs) == 1:
        swept, common = all_keys, []
    cols = ["job", "status", *swept, "step", "d_loss", "g_loss", *[m for m in metrics if m not in NOT_METRICS]]

    def cell(job: Job, col: str) -> str:
        if col == "job":
            return job.name
        if col == "status":
            return job.status + (f" ({job.reason})" if job.reason and job.status == "failed" else "")
        if col in swept:
            return job.overrides.get(col, "(default)")
        return fmt(job.final.get(col)) if job.final else "-"

    table = [[cell(j, c) for c in cols] for j in jobs]

    # ---- Markdown
    def md_escape(text: str) -> str:
        return text.replace("|", "\\|")

    direction = "" if sort is None else (" (higher is better)" if sort in HIGHER_IS_BETTER else " (lower is better)")
    counts = {s: sum(j.status == s for j in jobs) for s in ("done", "failed", "running", "pending")}
    lines = [f"# Sweep report: {root}", "",
             f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "; sorted by "
             + (f"`{sort}`{direction}" if sort else "job number") + ".", ""]
    search = read_search(root, jobs)  # an Optuna search's optimization_results.yaml
    notes_top = [describe_search(search, objective)] if search is not None else []
    notes_top += [n for n in [submitit_logs(root)] if n]
    for note in notes_top:
        lines += [note, ""]
    if common:
        lines += ["Common overrides: " + " ".join(f"`{c}`" for c in common), ""]
    lines += ["| " + " | ".join(md_escape(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table]
    notes = [f"- job {j.name}: {j.status}: {j.reason}" for j in jobs if j.status != "done" and j.reason]
    if notes:
        lines += ["", *notes]
    markdown = "\n".join(lines) + "\n"
    md_path = root / "sweep_report.md"
    md_path.write_text(markdown)

    # ---- CSV (raw values)
    csv_path = root / "sweep_report.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["job", "status", "reason", *swept, *cols[2 + len(swept):]])
        for j in jobs:
            vals = [j.final.get(c, "") if j.final.get(c) is not None else "" for c in cols[2 + len(swept):]]
            w.writerow([j.name, j.status, j.reason, *[j.overrides.get(k, "") for k in swept], *vals])

    # ---- plot: the sort metric against each swept parameter
    paths = {"markdown": md_path, "csv": csv_path}
    png = None
    if sort and swept:
        png = _plot(jobs, swept, sort, root / "sweep_report.png")
        paths["png"] = png

    # ---- HTML
    from gan_cli.report.html import Html, Image, Section, render_page, table as html_table

    import html as html_mod

    extra_html = "".join(f"<p>{html_mod.escape(n.replace('`', ''))}</p>" for n in notes_top)
    sections = [Section("jobs", "Jobs", [Html(extra_html + ("<p>Common overrides: <code>" + " ".join(common) + "</code></p>"
                                                            if common else "") + html_table(cols, table))],
                        intro=lines[2])]
    if png is not None:
        sections.append(Section("plot", f"{sort} against the swept parameters",
                                [Image(png, f"Final {sort}{direction} of each finished or running job against each "
                                            "swept parameter (failed and pending jobs have no value).")]))
    page = render_page(f"gan-cli sweep report: {root.name}", str(root.resolve()), sections)
    html_path = root / "sweep_report.html"
    html_path.write_text(page, encoding="utf-8")
    paths["html"] = html_path
    return paths


def _plot(jobs: list[Job], swept: list[str], metric: str, path: Path) -> Path:
    n = len(swept)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig = new_figure(4.2 * cols, 3.2 * nrows)
    for i, key in enumerate(swept):
        ax = fig.add_subplot(nrows, cols, i + 1)
        pts = [(j.overrides.get(key, "(default)"), j.final.get(metric), j) for j in jobs]
        pts = [(x, float(y), j) for x, y, j in pts if isinstance(y, (int, float)) and math.isfinite(float(y))]
        numeric = all(_number(x) is not None for x, _, _ in pts) and pts
        if numeric:
            xs = [_number(x) for x, _, _ in pts]
            ax.scatter(xs, [y for _, y, _ in pts], color="#762a83", zorder=3)
            if min(xs) > 0 and max(xs) / min(xs) > 50:
                ax.set_xscale("log")
            elif all(float(x).is_integer() for x in xs):
                from matplotlib.ticker import MaxNLocator

                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            cats = sorted({x for x, _, _ in pts})
            pos = {c: k for k, c in enumerate(cats)}
            ax.scatter([pos[x] for x, _, _ in pts], [y for _, y, _ in pts], color="#762a83", zorder=3)
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, rotation=20 if len(cats) > 3 else 0, fontsize=8)
            ax.set_xlim(-0.5, len(cats) - 0.5)
        for x, y, j in pts:
            ax.annotate(j.name, ((_number(x) if numeric else pos[x]), y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points", color="#555")
        ax.set_xlabel(key, fontsize=9)
        ax.set_ylabel(metric, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if not pts:
            ax.text(0.5, 0.5, "no finished job has this metric", ha="center", va="center", transform=ax.transAxes,
                    color="gray")
    fig.tight_layout()
    return save(fig, path)
