"""``write_report(run_dir)``: RUN_DIR/report.html (self-contained: images embedded as base64, opens
offline) plus the PNG/GIF files beside it in RUN_DIR/report/.

Sections (``<section id=...>``): ``config``, ``final-metrics``, ``losses``, ``metrics``, then by data kind
* toy2d: ``samples``, ``discriminator``, ``manifold``, ``gradients``, ``kl-js``, ``animation``;
* image: ``evolution``, ``final-grid`` (+ ``per-class`` for conditional models);
* csm: ``eigenvalues``, ``beamforming``, ``source-count``.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
import sys
import traceback
from pathlib import Path

from gan_cli.report.plots_common import (HIGHER_IS_BETTER, Html, Image, Run, Section, fmt, load_run, metric_names,
                                         plot_losses, plot_metrics)

KIND_SECTIONS = {
    "toy2d": ["samples", "discriminator", "manifold", "gradients", "kl-js", "animation"],
    "image": ["evolution", "final-grid"],
    "csm": ["eigenvalues", "beamforming", "source-count"],
}
COMMON_SECTIONS = ["config", "final-metrics", "losses", "metrics"]

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #222; background: #f6f6f6; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 28px 40px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 30px; }
.sub { color: #555; font-size: 14px; margin: 0 0 10px; }
nav { font-size: 13px; margin: 8px 0 4px; line-height: 1.8; }
nav a { margin-right: 12px; color: #2166ac; text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: Menlo, Consolas, monospace; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 12px; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 8px; overflow-x: auto; max-height: 480px; }
figure { margin: 8px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #444; margin-top: 4px; max-width: 1000px; }
.note { color: #8a6d3b; background: #fcf8e3; padding: 6px 10px; border-radius: 3px; font-size: 13px; }
.legend { font-size: 13px; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 6px; margin: 0 4px -1px 10px; }
.cols { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.row { display: flex; gap: 40px; flex-wrap: wrap; align-items: flex-start; }
.row > section { flex: 0 1 auto; min-width: 0; max-width: 100%; }
h3 { font-size: 15px; margin: 10px 0 6px; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".svg": "image/svg+xml"}.get(Path(path).suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_section(section: Section) -> str:
    parts = [f'<section id="{_e(section.id)}">', f"<h2>{_e(section.title)}</h2>"]
    if section.intro:
        parts.append(f"<p>{_e(section.intro)}</p>")
    for item in section.items:
        if isinstance(item, Image):
            parts.append(f'<figure><img src="{data_uri(item.path)}" alt="{_e(item.path.name)}">'
                         f"<figcaption>{_e(item.caption)} <code>report/{_e(item.path.name)}</code></figcaption></figure>")
        elif isinstance(item, Html):
            parts.append(item.text)
    parts.append("</section>")
    return "\n".join(parts)


def render_page(title: str, subtitle: str, sections: list[Section], legend: bool = False) -> str:
    nav = " ".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in sections)
    leg = ""
    if legend:
        leg = ('<p class="legend">Colours follow GAN Lab:<span class="swatch" style="background:#1a9850"></span>real data'
               '<span class="swatch" style="background:#762a83"></span>generated (fake)</p>')
    chunks, row = [], []
    for s in sections + [None]:
        if s is not None and s.inline:
            row.append(render_section(s))
            continue
        if row:
            chunks.append("<div class='row'>" + "\n".join(row) + "</div>")
            row = []
        if s is not None:
            chunks.append(render_section(s))
    body = "\n".join(chunks)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head>\n<body><main>\n<h1>{_e(title)}</h1>\n<p class=\"sub\">{_e(subtitle)}</p>\n"
            f"{leg}<nav>{nav}</nav>\n{body}\n</main></body></html>\n")


def table(header: list[str], rows: list[list], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ------------------------------------------------------------------------------------ sections
def _get(cfg, dotted: str, default="-"):
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(cfg, dotted, default=default)
    except Exception:  # noqa: BLE001 - an odd config must not break the report
        return default
    return default if value is None else value


def config_section(run: Run) -> Section:
    cfg = run.config
    keys = [("dataset", "dataset.name"), ("loss", "loss.name"), ("model", "model.name"),
            ("conditional", "model.conditional"), ("optimizer", "optimizer.name"),
            ("G learning rate", "optimizer.generator.lr"), ("D learning rate", "optimizer.discriminator.lr"),
            ("latent", None), ("steps", "train.steps"), ("batch size", "train.batch_size"),
            ("n_critic / n_gen", None), ("seed", "train.seed"), ("eval / checkpoint every", None)]
    rows = []
    for label, key in keys:
        if label == "latent":
            value = f"{_get(cfg, 'latent.dim')} ({_get(cfg, 'latent.distribution')})"
        elif label == "n_critic / n_gen":
            value = f"{_get(cfg, 'train.n_critic')} / {_get(cfg, 'train.n_gen')}"
        elif label == "eval / checkpoint every":
            value = f"{_get(cfg, 'train.eval_every')} / {_get(cfg, 'train.checkpoint_every')} steps"
        else:
            value = _get(cfg, key)
        rows.append([label, value])
    if run.overrides is None:
        over = "<p class='note'>no .hydra/overrides.yaml in the run folder (not started by gan train).</p>"
    elif not run.overrides:
        over = "<p>none (all defaults)</p>"
    else:
        over = "<pre>gan train " + " \\\n    ".join(_e(o) for o in run.overrides) + "</pre>"
    text = (f"<div class='cols'><div><h3>Overrides</h3>{over}</div><div><h3>Summary</h3>"
            f"{table(['key', 'value'], rows)}</div></div>"
            f"<details><summary>Resolved config (<code>resolved_config.yaml</code>)</summary>"
            f"<pre>{_e(run.config_text)}</pre></details>")
    return Section("config", "Configuration", [Html(text)], inline=True)


def final_metrics_section(run: Run) -> Section:
    row = run.final
    rows = []
    for k, v in row.items():
        note = ""
        if k not in ("step", "time", "d_loss", "g_loss"):
            note = "higher is better" if k in HIGHER_IS_BETTER else "lower is better"
        elif k == "time":
            note = "seconds since the start of training"
        rows.append([k, fmt(v), note])
    done = "finished (DONE)" if (run.path / "DONE").exists() else (
        "failed (FAILED)" if (run.path / "FAILED").exists() else "")
    intro = f"The last row of metrics.jsonl (step {row['step']} of {_get(run.config, 'train.steps')})" + (
        f"; run {done}." if done else ".")
    return Section("final-metrics", "Final metrics", [Html(table(["metric", "value", ""], rows, numeric={1}))],
                   intro=intro, inline=True)


def _safe(builder, name: str, ids: list[str]) -> list[Section]:
    """Run a section builder; on failure, placeholder sections that say why (the rest of the report stands)."""
    try:
        return builder()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("GAN_CLI_REPORT_RAISE"):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"gan-cli: warning: report: {name} failed: {type(exc).__name__}: {msg}", file=sys.stderr)
        if os.environ.get("GAN_CLI_DEBUG"):
            traceback.print_exc()
        note = Html(f"<p class='note'>could not draw this section: {_e(type(exc).__name__)}: {_e(msg)}</p>")
        return [Section(i, i.replace("-", " ").capitalize(), [note]) for i in ids]


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/report/*.png`` (and a GIF for 2D data); returns the HTML path.

    A missing run folder, or one without metrics yet, raises a one-line UserError.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    run = load_run(run_dir)
    out = run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.png")) + list(out.glob("*.gif")):
        old.unlink(missing_ok=True)

    names = metric_names(run.rows)
    sections = [config_section(run), final_metrics_section(run)]
    sections.append(Section("losses", "Losses", [Image(plot_losses(run.rows, out / "losses.png"),
                            "Discriminator and generator losses at each evaluation.")]))
    sections.append(Section("metrics", "Quality metrics", [Image(plot_metrics(run.rows, names, out / "metrics.png"),
                            "Every quality metric of metrics.jsonl against the training step.")]))

    kind, data, why = None, None, ""
    try:
        from gan_cli.data.build import build_dataset

        data = build_dataset(run.config.dataset)
        kind = data.kind
    except Exception as exc:  # noqa: BLE001 - the data set moved or cannot be built here
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        target = str(_get(run.config, "dataset._target_", ""))
        kind = "csm" if "csm" in target else "image" if "images" in target else "toy2d" if "toy2d" in target else None
    if kind is not None and data is None:
        note = Html(f"<p class='note'>cannot load the data set, so its sections are empty: {_e(why)}</p>")
        sections += [Section(i, i.replace("-", " ").capitalize(), [note]) for i in KIND_SECTIONS.get(kind, [])]
    elif kind == "toy2d":
        from gan_cli.report.plots_toy2d import Toy2DReport

        sections += _safe(lambda: Toy2DReport(run, data, out).sections(), "2D plots", KIND_SECTIONS["toy2d"])
    elif kind == "image":
        from gan_cli.report.plots_images import ImageReport

        ids = KIND_SECTIONS["image"] + (["per-class"] if _get(run.config, "model.conditional", False) is True else [])
        sections += _safe(lambda: ImageReport(run, data, out).sections(), "image grids", ids)
    elif kind == "csm":
        from gan_cli.report.plots_csm import CsmReport

        sections += _safe(lambda: CsmReport(run, data, out).sections(), "CSM plots", KIND_SECTIONS["csm"])

    row = run.final
    title = f"gan-cli report: {_get(run.config, 'loss.name')} on {_get(run.config, 'dataset.name')}"
    subtitle = (f"{run.path.resolve()} \u00b7 step {row['step']} of {_get(run.config, 'train.steps')} \u00b7 "
                f"{len(run.rows)} evaluations \u00b7 written {datetime.datetime.now():%Y-%m-%d %H:%M}")
    page = render_page(title, subtitle, sections, legend=kind in ("toy2d", "csm"))
    path = run.path / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
