"""Report sections for 2D data in GAN Lab's visual language (green = real, purple = fake).

Everything per step comes from ``samples/step_*.npz`` (written during training by
``gan_cli.callbacks.snapshots``): the fake samples of a fixed noise batch, the discriminator's logits on
a 60 x 60 grid, the generator's manifold and the generator-loss gradients on the fake samples.

Discriminator colours: for the log-loss family (gan, nsgan, mlgan) the heat map shows
``D(x) = sigmoid(logit)``, the probability of "real", on a fixed 0..1 scale centred at 0.5; for the
other losses (lsgan, wgan, wgan_gp, hinge) it shows the raw output on a diverging scale centred at
the loss's decision point (lsgan: (a + b) / 2, hinge: 0, wgan: the median over the window, as a
Wasserstein critic is only defined up to a constant). Green = looks real, purple = looks fake.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gan_cli.report.plots_common import (FAKE_COLOR, REAL_COLOR, Html, Image, Run, Section, new_figure,
                                         pick_steps, save)

LOG_LOSSES = ("gan", "nsgan", "mlgan", "gngan")  # D(x) = sigmoid(logit) is a probability
CMAP = "PRGn"   # purple (fake) - white - green (real)
PANELS = 6      # snapshots shown side by side
GIF_FRAMES = 60


def d_display(logits: np.ndarray, loss_name: str, loss_cfg) -> tuple[np.ndarray, float, float, str]:
    """(values to draw, vmin, vmax, colour-bar label) for the discriminator's logits."""
    logits = np.asarray(logits, np.float64)
    if loss_name in LOG_LOSSES:
        return 1.0 / (1.0 + np.exp(-logits)), 0.0, 1.0, "D(x) = P(real)"
    if loss_name == "lsgan":
        a, b = float(loss_cfg.get("a", 0.0)), float(loss_cfg.get("b", 1.0))
        center, label = 0.5 * (a + b), f"D(x) (targets: fake {a:g}, real {b:g})"
    elif loss_name == "hinge":
        center, label = 0.0, "critic D(x) (hinge margin at 0)"
    else:
        center, label = float(np.median(logits)), "critic D(x) - median (Wasserstein)"
        logits = logits - center
        center = 0.0
    finite = logits[np.isfinite(logits)]
    half = float(np.max(np.abs(finite - center))) if finite.size else 1.0
    half = half if half > 0 else 1.0
    return logits, center - half, center + half, label


def _mesh(manifold: np.ndarray, every: int, **style):
    """The generator's manifold ``(k, k, 2)`` as one LineCollection: every ``every``-th row and column of the
    noise grid as a line (one artist instead of 2k ``plot`` calls, which made this figure the report's slowest)."""
    from matplotlib.collections import LineCollection

    lines = [manifold[k] for k in range(0, manifold.shape[0], every)]
    lines += [manifold[:, k] for k in range(0, manifold.shape[1], every)]
    return LineCollection(lines, colors=FAKE_COLOR, **style)


class Toy2DReport:
    """Builds the 2D sections of a run's report."""

    def __init__(self, run: Run, data, out_dir: Path):
        self.run, self.data, self.out = run, data, Path(out_dir)
        cfg = run.config
        self.loss_name = str(cfg.loss.name)
        self.loss_cfg = cfg.loss
        self.bounds = tuple(float(b) for b in data.bounds())
        self.real = data.real_samples(1000, int(cfg.train.seed) + 7)[0]
        self.snaps = [(step, run.load_snapshot(p)) for step, p in run.snapshots]

    # --------------------------------------------------------------------- helpers
    def _window(self, ax, fake: np.ndarray | None = None, expand: bool = False):
        xmin, xmax, ymin, ymax = self.bounds
        if expand and fake is not None and len(fake):
            w, h = xmax - xmin, ymax - ymin
            f = fake[np.isfinite(fake).all(1)]
            if len(f):
                lo, hi = np.percentile(f, 1, axis=0), np.percentile(f, 99, axis=0)
                xmin, xmax = max(min(xmin, lo[0]), xmin - w), min(max(xmax, hi[0]), xmax + w)
                ymin, ymax = max(min(ymin, lo[1]), ymin - h), min(max(ymax, hi[1]), ymax + h)
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(ymin, ymax)
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=7)

    def _scatter(self, ax, fake, real_alpha=0.6, size=6):
        """Fake (purple) first, real (green, white rim) on top so tight real modes stay visible."""
        if fake is not None:
            ax.scatter(fake[:, 0], fake[:, 1], s=size, c=FAKE_COLOR, alpha=0.75, linewidths=0, label="fake")
        ax.scatter(self.real[:, 0], self.real[:, 1], s=size * 1.6, c=REAL_COLOR, alpha=real_alpha,
                   edgecolors="white", linewidths=0.3, label="real")

    def _heat(self, ax, snap):
        vals, vmin, vmax, label = d_display(snap["d_logits"], self.loss_name, self.loss_cfg)
        gx, gy = snap["d_grid_x"], snap["d_grid_y"]
        im = ax.imshow(vals, origin="lower", extent=(gx[0], gx[-1], gy[0], gy[-1]), cmap=CMAP, vmin=vmin,
                       vmax=vmax, interpolation="bilinear", aspect="auto")
        return im, label

    def _outside(self, fake) -> int:
        xmin, xmax, ymin, ymax = self.bounds
        inside = (fake[:, 0] >= xmin) & (fake[:, 0] <= xmax) & (fake[:, 1] >= ymin) & (fake[:, 1] <= ymax)
        return int((~inside).sum())

    @staticmethod
    def _grid(n: int, colorbar: bool = False, size: float = 3.5):
        """A figure of ``n`` square panels, at most 3 per row (readable at page width)."""
        import math

        cols = min(n, 3)
        rows = math.ceil(n / cols)
        fig = new_figure(size * cols + (0.8 if colorbar else 0.2), size * rows + 0.1)
        axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
        return fig, axes

    def _missing(self, what: str) -> Html:
        return Html(f"<p class='note'>{what} not recorded in this run's samples/step_*.npz "
                    "(it was trained before gan-cli saved them, or its model is conditional).</p>")

    # --------------------------------------------------------------------- sections
    def sections(self) -> list[Section]:
        if not self.snaps:
            note = Html("<p class='note'>no samples/step_*.npz in this run folder: nothing to draw.</p>")
            return [Section(s, t, [note]) for s, t in (
                ("samples", "Real vs fake samples"), ("discriminator", "Discriminator heat map"),
                ("manifold", "Generator manifold"), ("gradients", "Generator gradients"),
                ("kl-js", "KL / JS divergence"), ("animation", "Training animation"))]
        return [self.samples(), self.discriminator(), self.manifold(), self.gradients(), self.kl_js(),
                self.animation()]

    def samples(self) -> Section:
        chosen = pick_steps(self.snaps, PANELS)
        fig, axes = self._grid(len(chosen))
        every = np.concatenate([snap["fake"] for _, snap in chosen])   # one window for all panels
        for ax, (step, snap) in zip(axes, chosen):
            fake = snap["fake"]
            self._scatter(ax, fake)
            self._window(ax, every, expand=True)
            ax.set_title(f"step {step}", fontsize=10)
        axes[0].legend(loc="upper left", fontsize=7, markerscale=2, framealpha=0.8)
        fig.tight_layout()
        path = save(fig, self.out / "toy2d_samples.png")
        return Section("samples", "Real vs fake samples", [Image(path, "Green: real data; purple: generated samples "
                       "of the same fixed noise batch at each evaluation (window widened to show stray fakes).")])

    def discriminator(self) -> Section:
        have = [(s, d) for s, d in self.snaps if "d_logits" in d]
        if not have:
            return Section("discriminator", "Discriminator heat map", [self._missing("The discriminator's output is")])
        chosen = pick_steps(have, PANELS)
        fig, axes = self._grid(len(chosen), colorbar=True)
        im = label = None
        for ax, (step, snap) in zip(axes, chosen):
            im, label = self._heat(ax, snap)
            self._scatter(ax, snap["fake"], size=5)
            self._window(ax)
            out = self._outside(snap["fake"])
            ax.set_title(f"step {step}" + (f" ({out} fakes off-window)" if out else ""), fontsize=9)
        fig.tight_layout()
        cbar = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
        cbar.set_label(label, fontsize=8)
        cbar.ax.tick_params(labelsize=7)
        path = save(fig, self.out / "toy2d_discriminator.png")
        scale = ("sigmoid of the logits, the probability of 'real'" if self.loss_name in LOG_LOSSES
                 else "raw output on a diverging scale")
        return Section("discriminator", "Discriminator heat map", [Image(path, f"Background: the discriminator's "
                       f"output ({self.loss_name}: {scale}); green regions look real to D, purple ones fake. "
                       "Dots: real (green) and generated (purple) samples.")])

    def manifold(self) -> Section:
        have = [(s, d) for s, d in self.snaps if "manifold" in d]
        if not have:
            return Section("manifold", "Generator manifold", [self._missing("The generator's manifold is")])
        chosen = pick_steps(have, PANELS)
        fig, axes = self._grid(len(chosen))
        every = np.concatenate([snap["manifold"].reshape(-1, 2) for _, snap in chosen])
        for ax, (step, snap) in zip(axes, chosen):
            ax.scatter(self.real[:, 0], self.real[:, 1], s=5, c=REAL_COLOR, alpha=0.35, linewidths=0)
            ax.add_collection(_mesh(snap["manifold"], 1, lw=0.7, alpha=0.7))
            self._window(ax, every, expand=True)
            ax.set_title(f"step {step}", fontsize=10)
        fig.tight_layout()
        path = save(fig, self.out / "toy2d_manifold.png")
        dim = int(self.run.config.latent.dim)
        span = "+-1" if str(self.run.config.latent.distribution) == "uniform" else "+-2"
        what = "the noise plane" if dim == 2 else f"a 2D slice (dimensions 0 and 1, the other {dim - 2} zero) of the {dim}-D noise space"
        return Section("manifold", "Generator manifold", [Image(path, f"A square grid over {what} ({span} per axis) "
                       "pushed through the generator (purple mesh), over the real data (green). Stretched cells spread "
                       "probability thinly, squeezed ones concentrate it.")])

    def gradients(self) -> Section:
        have = [(s, d) for s, d in self.snaps if "fake_grad" in d and "d_logits" in d]
        if not have:
            return Section("gradients", "Generator gradients", [self._missing("The generator's gradients are")])
        chosen = pick_steps(have, 3)
        fig, axes = self._grid(len(chosen), colorbar=True)
        im = label = None
        xmin, xmax, ymin, ymax = self.bounds
        arrow = 0.06 * max(xmax - xmin, ymax - ymin)
        for ax, (step, snap) in zip(axes, chosen):
            im, label = self._heat(ax, snap)
            fake, grad = snap["fake"][:200], -snap["fake_grad"][:200]
            norm = np.linalg.norm(grad, axis=1)
            top = float(np.nanmax(norm)) if norm.size and np.isfinite(norm).any() else 0.0
            # arrow length: the direction always, the size relative to the largest gradient of the panel
            scale = arrow / top if top > 0 else 0.0
            ax.scatter(self.real[:, 0], self.real[:, 1], s=8, c=REAL_COLOR, alpha=0.6, edgecolors="white",
                       linewidths=0.3)
            ax.scatter(fake[:, 0], fake[:, 1], s=6, c=FAKE_COLOR, linewidths=0)
            ax.quiver(fake[:, 0], fake[:, 1], grad[:, 0] * scale, grad[:, 1] * scale, angles="xy",
                      scale_units="xy", scale=1, color="black", width=0.003, alpha=0.7)
            self._window(ax)
            ax.set_title(f"step {step}", fontsize=10)
        fig.tight_layout()
        cbar = fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)
        cbar.set_label(label, fontsize=8)
        cbar.ax.tick_params(labelsize=7)
        path = save(fig, self.out / "toy2d_gradients.png")
        return Section("gradients", "Generator gradients", [Image(path, "Arrows: the direction a generator step "
                       "moves each fake sample (minus the gradient of the generator loss with respect to the sample), "
                       "length relative to the largest arrow of the panel, over the discriminator's heat map.")])

    def kl_js(self) -> Section:
        rows = self.run.rows
        keys = [k for k in ("kl", "js") if any(r.get(k) is not None for r in rows)]
        if not keys:
            return Section("kl-js", "KL / JS divergence", [Html("<p class='note'>no kl/js metrics in metrics.jsonl.</p>")])
        fig = new_figure(4.0 * len(keys), 2.9)
        names = {"kl": "KL(real || fake) [bits]", "js": "JS(real, fake) [bits]"}
        for i, key in enumerate(keys):
            ax = fig.add_subplot(1, len(keys), i + 1)
            steps = [r["step"] for r in rows]
            vals = [np.nan if r.get(key) is None else r[key] for r in rows]
            ax.plot(steps, vals, marker="o", markersize=3, color=FAKE_COLOR)
            ax.set_title(names[key], fontsize=10)
            ax.set_xlabel("step", fontsize=8)
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        path = save(fig, self.out / "toy2d_kl_js.png")
        cells = getattr(self.data, "kl_grid", 30)
        return Section("kl-js", "KL / JS divergence", [Image(path, f"GAN Lab's divergences between histograms of real "
                       f"and generated samples on a {cells} x {cells} grid over the plot window (lower is better).")])

    def animation(self) -> Section:
        from matplotlib.animation import PillowWriter

        frames = pick_steps(self.snaps, GIF_FRAMES)
        fig = new_figure(5.0, 5.0)
        ax = fig.add_subplot(1, 1, 1)
        path = self.out / "toy2d_training.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = PillowWriter(fps=4)
        laid_out = False
        with writer.saving(fig, str(path), dpi=80):
            for step, snap in frames:
                ax.clear()
                if "d_logits" in snap:
                    self._heat(ax, snap)
                self._scatter(ax, snap["fake"], size=5)
                if "manifold" in snap:
                    ax.add_collection(_mesh(snap["manifold"], 2, lw=0.5, alpha=0.4))
                self._window(ax)
                ax.set_title(f"step {step}", fontsize=10)
                if not laid_out:  # every frame has the same axes: one layout pass for all
                    fig.tight_layout()
                    laid_out = True
                writer.grab_frame()
            for _ in range(3):   # hold the last frame a little
                writer.grab_frame()
        return Section("animation", "Training animation", [Image(path, f"All of training ({len(frames)} evaluations, "
                       "4 per second): discriminator background, real (green) and generated (purple) samples and "
                       "the generator's manifold.")])
