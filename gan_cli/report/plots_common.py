"""Reading a run folder and the plots every report has (losses, quality metrics).

Matplotlib is used through ``Figure`` + ``FigureCanvasAgg`` only (no pyplot state, no display),
so reports render headless and in threads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gan_cli.metrics import higher_is_better
from gan_cli.core.errors import UserError
from gan_cli.run.files import read_overrides, read_rows  # noqa: F401 - re-exported for the report modules

# GAN Lab's visual language: green = real, purple = fake.
REAL_COLOR = "#1a9850"
FAKE_COLOR = "#762a83"
D_COLOR = "#2166ac"
G_COLOR = "#d6604d"
STEP_RE = re.compile(r"^step_(\d+)\.npz$")

# quality metrics where larger is better (everything else: smaller is better), from each metric's module
HIGHER_IS_BETTER = higher_is_better()
NOT_METRICS = {"step", "d_loss", "g_loss", "time"}




def metric_names(rows: list[dict]) -> list[str]:
    """Quality-metric keys in first-seen order (losses, step and time excluded)."""
    names: list[str] = []
    for row in rows:
        for k, v in row.items():
            if k not in NOT_METRICS and k not in names and (v is None or isinstance(v, (int, float))):
                names.append(k)
    return names


@dataclass
class Run:
    """What a report reads from a run folder."""

    path: Path
    rows: list[dict]
    overrides: list[str] | None
    config_text: str
    config: object                       # omegaconf DictConfig (resolved config)
    snapshots: list[tuple[int, Path]] = field(default_factory=list)  # (step, samples/step_*.npz), by step

    @property
    def final(self) -> dict:
        return self.rows[-1]

    def load_snapshot(self, path: Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder; a missing or empty one raises a one-line UserError."""
    from omegaconf import OmegaConf

    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"{path} does not exist; give a run folder written by gan train (outputs/DATE/TIME)")
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; give a run folder written by gan train (outputs/DATE/TIME)")
    cfg_path = path / "resolved_config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"{path} has no resolved_config.yaml; give a run folder written by gan train (outputs/DATE/TIME)")
    rows = read_rows(path / "metrics.jsonl")
    if not rows:
        raise UserError(f"{path} has no metrics yet (metrics.jsonl is missing or empty); "
                        "wait for the run's first evaluation (train.eval_every) or train it with gan resume")
    text = cfg_path.read_text()
    try:
        cfg = OmegaConf.create(text)
    except Exception:  # noqa: BLE001 - a corrupt YAML is a user problem
        raise UserError(f"{cfg_path} is not readable YAML; restore it from the checkpoint "
                        "(gan_cli.run.checkpoint.read_config) or re-run the training") from None
    snaps = []
    folder = path / "samples"
    if folder.is_dir():
        snaps = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_RE.match(p.name)))
    return Run(path=path, rows=rows, overrides=read_overrides(path), config_text=text, config=cfg, snapshots=snaps)


def pick_steps(snapshots: list, count: int) -> list:
    """Up to ``count`` snapshots spread evenly over training, first and last included."""
    if len(snapshots) <= count:
        return list(snapshots)
    idx = np.unique(np.round(np.linspace(0, len(snapshots) - 1, count)).astype(int))
    return [snapshots[i] for i in idx]


# ------------------------------------------------------------------------------- matplotlib
def new_figure(width: float, height: float, dpi: int = 100):
    """A headless Figure (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([r["step"] for r in rows], float)
    vals = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], float)
    return steps, vals


def _plot_series(ax, steps, vals, **kw):
    """A line with markers (markers alone make single evaluations visible)."""
    ax.plot(steps, vals, marker="o", markersize=3 if len(steps) > 30 else 4, linewidth=1.5, **kw)


def plot_losses(rows: list[dict], path: Path) -> Path:
    """D and G losses (block means at every evaluation) against the training step."""
    fig = new_figure(8.0, 2.9)
    ax = fig.add_subplot(1, 1, 1)
    for key, color, label in (("d_loss", D_COLOR, "discriminator (D) loss"), ("g_loss", G_COLOR, "generator (G) loss")):
        steps, vals = _series(rows, key)
        if np.isfinite(vals).any():
            _plot_series(ax, steps, vals, color=color, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    ax.set_title("Losses (mean over the rounds before each evaluation)", fontsize=10)
    return save(fig, path)


def plot_metrics(rows: list[dict], names: list[str], path: Path, cols: int = 3) -> Path:
    """One small panel per quality metric against the training step."""
    names = names or ["(none)"]
    n = len(names)
    cols = min(cols, n)
    nrows = math.ceil(n / cols)
    fig = new_figure(3.6 * cols, 2.6 * nrows)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, i + 1)
        steps, vals = _series(rows, name)
        if np.isfinite(vals).any():
            _plot_series(ax, steps, vals, color="#333333")
        else:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes, color="gray")
        better = "higher is better" if name in HIGHER_IS_BETTER else "lower is better"
        ax.set_title(f"{name}  ({better})", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def fmt(value) -> str:
    """A metric value for tables."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


# ------------------------------------------------------------------------------- page model
@dataclass
class Image:
    """A PNG or GIF written beside the report, embedded in the page as base64."""

    path: Path
    caption: str = ""


@dataclass
class Html:
    """A trusted HTML fragment (already escaped)."""

    text: str


@dataclass
class Section:
    """One ``<section id=...>`` of the report."""

    id: str
    title: str
    items: list = field(default_factory=list)
    intro: str = ""   # plain text, escaped when rendered
    inline: bool = False  # consecutive inline sections share one row (side by side on wide screens)
