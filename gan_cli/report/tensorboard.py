"""``train.tensorboard=true``: losses, quality metrics and sample images as TensorBoard summaries.

Events go to RUN_DIR/tensorboard (``tensorboard --logdir RUN_DIR/tensorboard``):

* ``loss/d_loss``, ``loss/g_loss``: the mean over each compiled call (``train.steps_per_execution`` rounds),
  logged at the call's last round;
* the run's config as hyperparameters of the HParams plugin (needs the ``tensorboard`` package, which
  viewing the events needs anyway), so the runs of a sweep line up in TensorBoard's HParams tab;
* ``metrics/<name>``: every quality metric of each new metrics.jsonl row;
* ``samples``: an image per evaluation (image data: the fixed-batch grid; 2D data: real vs fake over
  the discriminator's heat map; CSM data: real vs generated eigenvalue spectra).

Put the callback after the ``RunMonitor`` in the callback list (it reads ``monitor.last_row`` and the
snapshot the monitor just wrote) and call ``close()`` after training (it also logs a final row that
was evaluated outside ``fit``).
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import keras
import numpy as np

from gan_cli.report.plots_common import NOT_METRICS


def _metadata(plugin: str):
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))


def write_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar through TensorFlow's core ``tf.summary.write`` (the ``tensorboard``
    package is needed only to view the events, not to write them)."""
    import tensorflow as tf

    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_metadata("scalars"))


def write_image(tag: str, image: np.ndarray, step: int) -> None:
    """A TensorBoard image (``(H, W, C)`` float in [0, 1]) as PNG, in the layout of ``tf.summary.image``."""
    import tensorflow as tf

    img = np.clip(np.asarray(image, np.float32), 0, 1)
    if img.ndim == 2:
        img = img[..., None]
    png = tf.io.encode_png(tf.constant((img * 255 + 0.5).astype(np.uint8))).numpy()
    tensor = tf.constant([str(img.shape[1]).encode(), str(img.shape[0]).encode(), png])
    tf.summary.write(tag, tensor, step=step, metadata=_metadata("images"))


def hparams_of(cfg) -> dict:
    """A run config as flat ``{"section.key": bool | int | float | str}`` (lists and null as text)."""
    from omegaconf import OmegaConf

    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in ("hydra", "_target_"):
                    walk(f"{prefix}{key}.", value)
        else:
            name = prefix[:-1]
            flat[name] = node if isinstance(node, (bool, int, float, str)) else str(node)

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return flat


class TensorBoardCallback(keras.callbacks.Callback):
    """Writes tf.summary events for a run; ``monitor`` is the run's ``RunMonitor``."""

    def __init__(self, run_dir: str | Path, data, monitor, logdir: str | Path | None = None):
        super().__init__()
        import tensorflow as tf

        self.run_dir = Path(run_dir)
        self.data, self.monitor = data, monitor
        self.logdir = Path(logdir) if logdir is not None else self.run_dir / "tensorboard"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.writer = tf.summary.create_file_writer(str(self.logdir))
        self.logged_step = -1
        self.closed = False
        self._image_failed = False
        self._calls, self._running = 0, {}
        self.write_hparams()

    def _step(self) -> int:
        return int(self.monitor.gan.round.numpy())

    def write_hparams(self) -> None:
        """The run's config, flattened (``loss.name``, ``optimizer.generator.lr``, ...), as HParams."""
        try:
            from tensorboard.plugins.hparams import api as hp
        except ImportError:
            return  # the events stay viewable; only the HParams tab is empty
        with self.writer.as_default():
            hp.hparams(hparams_of(self.monitor.cfg), trial_id=str(self.run_dir))
        self.writer.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._calls, self._running = 0, {}  # Keras restarts its running loss means every epoch

    def on_train_batch_end(self, batch, logs=None):
        """Log the mean loss of this compiled call: Keras reports running means over the epoch, and
        every call of an epoch runs as many rounds, so call k's mean is k m_k - (k - 1) m_(k-1)."""
        if self.closed or not logs:
            return
        self._calls += 1
        k, step = self._calls, self._step()
        with self.writer.as_default():
            for key in ("d_loss", "g_loss"):
                if key in logs:
                    mean = float(logs[key])
                    value = k * mean - (k - 1) * self._running.get(key, 0.0)
                    self._running[key] = mean
                    if math.isfinite(value):
                        write_scalar(f"loss/{key}", value, step)

    def on_epoch_end(self, epoch, logs=None):
        self.log_new_row()

    def log_new_row(self) -> None:
        """Log the monitor's newest metrics row (and its sample image) if not logged yet."""
        row = self.monitor.last_row
        if self.closed or not row or row.get("step", -1) == self.logged_step:
            return
        step = int(row["step"])
        with self.writer.as_default():
            for key, value in row.items():
                if key not in NOT_METRICS and isinstance(value, (int, float)) and math.isfinite(float(value)):
                    write_scalar(f"metrics/{key}", float(value), step)
            image = self._image(step)
            if image is not None:
                write_image("samples", image, step)
        self.writer.flush()
        self.logged_step = step

    def close(self) -> None:
        """Log a row evaluated outside ``fit`` (the final one), then close the writer (idempotent)."""
        if self.closed:
            return
        self.log_new_row()
        self.writer.flush()
        self.writer.close()
        self.closed = True

    def on_train_end(self, logs=None):
        if not self.closed:
            self.writer.flush()

    # ------------------------------------------------------------------ images
    def _image(self, step: int) -> np.ndarray | None:
        """An ``(H, W, C)`` float image in [0, 1] for this evaluation, or None."""
        path = self.run_dir / "samples" / f"step_{step:08d}.npz"
        if not path.is_file() or self._image_failed:
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                snap = {k: f[k] for k in f.files}
            kind = getattr(self.data, "kind", "")
            if kind == "image":
                from gan_cli.data.image_grid import image_grid

                return image_grid(snap["fake"][:64], cols=8)
            if kind == "toy2d":
                return self._render(self._toy2d, snap, step)
            if kind == "csm":
                return self._render(self._csm, snap, step)
        except Exception as exc:  # noqa: BLE001 - a picture must never stop training
            self._image_failed = True
            print(f"gan-cli: warning: TensorBoard sample images disabled: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None

    @staticmethod
    def _render(draw, snap, step) -> np.ndarray:
        from PIL import Image as PILImage

        from gan_cli.report.plots_common import new_figure

        fig = new_figure(4.0, 4.0)
        draw(fig, snap, step)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, facecolor="white")
        buf.seek(0)
        with PILImage.open(buf) as im:
            return np.asarray(im.convert("RGB"), np.float32) / 255.0

    def _toy2d(self, fig, snap, step):
        from gan_cli.report.plots_common import FAKE_COLOR, REAL_COLOR
        from gan_cli.report.plots_toy2d import CMAP, d_display

        ax = fig.add_subplot(1, 1, 1)
        xmin, xmax, ymin, ymax = self.data.bounds()
        if "d_logits" in snap:
            cfg = self.monitor.cfg
            vals, vmin, vmax, _ = d_display(snap["d_logits"], str(cfg.loss.name), cfg.loss)
            ax.imshow(vals, origin="lower", extent=(xmin, xmax, ymin, ymax), cmap=CMAP, vmin=vmin, vmax=vmax,
                      aspect="auto")
        if not hasattr(self, "_real"):
            self._real = self.data.real_samples(500, 7)[0]
        fake = snap["fake"]
        ax.scatter(fake[:, 0], fake[:, 1], s=4, c=FAKE_COLOR, linewidths=0)
        ax.scatter(self._real[:, 0], self._real[:, 1], s=6, c=REAL_COLOR, edgecolors="white", linewidths=0.3)
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(ymin, ymax)
        ax.set_title(f"step {step}")

    def _csm(self, fig, snap, step):
        from gan_cli.metrics.csm import eig_db
        from gan_cli.report.plots_common import FAKE_COLOR, REAL_COLOR

        if not hasattr(self, "_real_db"):
            from gan_cli.report.plots_csm import real_csms

            self._real_db = eig_db(real_csms(self.data, 200, 7)[0]).mean(0)
        gen = np.nan_to_num(np.asarray(self.data.to_user_space(snap["fake"]), np.complex128))
        ax = fig.add_subplot(1, 1, 1)
        j = np.arange(1, len(self._real_db) + 1)
        ax.plot(j, self._real_db, color=REAL_COLOR, marker="o", ms=3, label="real")
        ax.plot(j, eig_db(gen).mean(0), color=FAKE_COLOR, marker="o", ms=3, label="generated")
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel("dB re largest")
        ax.legend()
        ax.set_title(f"mean eigenvalue spectrum, step {step}")
