"""Report sections for image data: the fixed-latent grid over training, the final grid, per-class grids.

All grids come from ``samples/step_*.npz`` (``fake``: the first 100 images of the fixed evaluation
noise batch, model space [-1, 1]; ``labels`` for conditional models). Per-class grids of a
conditional model are generated from the last checkpoint (10 images per class, fixed seed) and fall
back to the final snapshot's images sorted by label when the checkpoint cannot be loaded.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from gan_cli.report.plots_common import Html, Image, Run, Section, new_figure, pick_steps, save

PANELS = 6     # snapshots in the evolution strip
EVOLVE = 16    # images per snapshot in the strip (4 x 4)
COLS = 10


def _show(ax, x: np.ndarray, cols: int):
    from gan_cli.data.image_grid import image_grid

    grid = image_grid(x, cols=cols)
    c = grid.shape[-1]
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


class ImageReport:
    """Builds the image sections of a run's report."""

    def __init__(self, run: Run, data, out_dir: Path):
        self.run, self.data, self.out = run, data, Path(out_dir)
        # only the snapshots drawn are read (an image snapshot holds num_samples images; a long run has many)
        chosen = pick_steps(run.snapshots, PANELS)
        self.snaps = [(step, run.load_snapshot(p)) for step, p in chosen]
        self.conditional = bool(run.config.model.get("conditional", False)) and int(data.num_classes) >= 2

    def sections(self) -> list[Section]:
        if not self.snaps:
            note = Html("<p class='note'>no samples/step_*.npz in this run folder: nothing to draw.</p>")
            out = [Section("evolution", "Samples over training", [note]), Section("final-grid", "Final samples", [note])]
            return out + ([Section("per-class", "Per-class samples", [note])] if self.conditional else [])
        out = [self.evolution(), self.final_grid()]
        if self.conditional:
            out.append(self.per_class())
        return out

    def evolution(self) -> Section:
        chosen = pick_steps(self.snaps, PANELS)
        cols = len(chosen)
        fig = new_figure(2.3 * cols, 2.6)
        for i, (step, snap) in enumerate(chosen):
            ax = fig.add_subplot(1, cols, i + 1)
            _show(ax, snap["fake"][:EVOLVE], cols=int(math.sqrt(EVOLVE)))
            ax.set_title(f"step {step}", fontsize=10)
        fig.tight_layout()
        path = save(fig, self.out / "images_evolution.png", dpi=110)
        return Section("evolution", "Samples over training", [Image(path, f"The same {EVOLVE} noise vectors (the fixed "
                       "evaluation batch) at each evaluation: how the generator's output for one latent point changes.")])

    def final_grid(self) -> Section:
        step, snap = self.snaps[-1]
        x = snap["fake"][:COLS * COLS]
        rows = math.ceil(len(x) / COLS)
        fig = new_figure(7.0, 7.0 * rows / COLS + 0.4)
        ax = fig.add_subplot(1, 1, 1)
        _show(ax, x, COLS)
        ax.set_title(f"step {step}: {len(x)} samples of the fixed noise batch", fontsize=10)
        path = save(fig, self.out / "images_final.png", dpi=110)
        return Section("final-grid", "Final samples", [Image(path, "Generated images at the end of training.")])

    def _class_images(self) -> tuple[np.ndarray, str]:
        k = int(self.data.num_classes)
        try:
            from gan_cli.run.load import load_for_inference

            _, _, gan = load_for_inference(self.run.path, data=self.data)
            labels = np.repeat(np.arange(k, dtype=np.int32), COLS)
            fake, _ = gan.sample(len(labels), seed=int(self.run.config.train.seed) + 999, labels=labels)
            # (k * COLS) images in class order = one row per class
            return np.asarray(fake, np.float32), f"the last checkpoint (step {int(gan.round.numpy())})"
        except Exception as exc:  # noqa: BLE001 - fall back to the snapshot
            print(f"gan-cli: report: per-class grid from the snapshot ({str(exc).splitlines()[0] if str(exc) else exc})",
                  file=sys.stderr)
            from gan_cli.data.image_grid import class_rows

            step, snap = self.snaps[-1]
            if "labels" not in snap:
                return np.empty((0,)), ""
            return class_rows(snap["fake"], snap["labels"], k, COLS), f"the fixed evaluation batch at step {step}"

    def per_class(self) -> Section:
        x, source = self._class_images()
        if x.size == 0:
            return Section("per-class", "Per-class samples", [Html("<p class='note'>no labels recorded.</p>")])
        k = int(self.data.num_classes)
        fig = new_figure(7.0, 7.0 * k / COLS + 0.4)
        ax = fig.add_subplot(1, 1, 1)
        _show(ax, x, COLS)
        h = x.shape[1] + 1
        names = list(getattr(self.data, "class_names", [str(i) for i in range(k)]))[:k]
        ax.set_yticks([1 + r * h + h / 2 - 1 for r in range(k)])
        ax.set_yticklabels(names, fontsize=9)
        ax.set_title(f"{COLS} samples per class, one row per class", fontsize=10)
        path = save(fig, self.out / "images_per_class.png", dpi=110)
        return Section("per-class", "Per-class samples", [Image(path, f"Conditional generation per class label, from {source}.")])
