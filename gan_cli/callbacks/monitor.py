"""Keras callbacks of a training run: progress bar, evaluation log + samples, checkpoints, NaN guard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from gan_cli.core import streams
from gan_cli.callbacks.snapshots import snapshot_extras
from gan_cli.run.checkpoint import save_checkpoint


def _clean(value):
    """JSON-safe float: NaN/inf become null."""
    value = float(value)
    return value if math.isfinite(value) else None




def evaluation_samples(gan, cfg, n: int):
    """The fixed evaluation batch: ``n`` samples (and labels) that every evaluation, ``gan evaluate``
    included, scores, so logged and re-evaluated metrics agree."""
    return gan.sample(n, seed=int(cfg.train.seed) + streams.EVAL_NOISE)  # the same batch at every evaluation


class NonFiniteLoss(RuntimeError):
    """A loss or a weight became NaN or infinite.

    ``step`` is the round at which it was detected and ``first_step`` the earliest round it
    can have appeared at (the round after the last check that found it finite): losses are
    checked after every compiled call (``train.steps_per_execution`` rounds; with 1 the step
    is exact), weights at every block end and before every checkpoint, so no checkpoint ever
    holds non-finite weights.
    """

    def __init__(self, what: str, step: int, first_step: int):
        self.what, self.step, self.first_step = what, int(step), int(first_step)
        where = (f"at step {self.step}" if self.first_step >= self.step
                 else f"in steps {self.first_step}-{self.step}")
        super().__init__(f"non-finite {what} {where}")


def weights_finite(gan) -> bool:
    """True when every generator and discriminator weight is finite (one device-side reduction)."""
    checks = [keras.ops.all(keras.ops.isfinite(v)) for v in (*gan.generator.weights, *gan.discriminator.weights)]
    return bool(keras.ops.convert_to_numpy(keras.ops.all(keras.ops.stack(checks)))) if checks else True


class ProgressBar(keras.callbacks.Callback):
    """tqdm bar over training rounds showing d_loss, g_loss and the latest primary metric."""

    def __init__(self, total: int, initial: int, steps_per_call: int, metric_name: str, enabled: bool = True):
        super().__init__()
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not enabled,
                        desc="train")
        self.steps_per_call = steps_per_call
        self.metric_name, self.metric_value = metric_name, None

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.bar.update(self.steps_per_call)
        post = {k: f"{float(logs[k]):.4g}" for k in ("d_loss", "g_loss") if k in logs}
        if self.metric_value is not None:
            post[self.metric_name] = f"{self.metric_value:.4g}"
        self.bar.set_postfix(post, refresh=False)

    def close(self):
        self.bar.close()


class RunMonitor(keras.callbacks.Callback):
    """At the end of every Keras epoch (a block of rounds): evaluate, log, snapshot, checkpoint.

    Writes ``metrics.jsonl`` rows ``{"step", "d_loss", "g_loss", <quality metrics>, "time"}``,
    ``samples/step_XXXXXXXX.npz`` (``fake``: generated samples from a fixed noise batch,
    plus ``labels`` for conditional models and dataset-specific extras) and checkpoints.
    """

    def __init__(self, gan, data, cfg, run_dir: Path, evaluator, progress: ProgressBar | None):
        super().__init__()
        self.gan, self.data, self.cfg, self.run_dir = gan, data, cfg, Path(run_dir)
        self.evaluator, self.progress = evaluator, progress
        self.t0 = time.time()
        self.last_row: dict | None = None
        self.last_saved_step = -1
        self.reset_checks(int(gan.round.numpy()))
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)

    def reset_checks(self, step: int) -> None:
        """Start the NaN/Inf bookkeeping at round ``step`` (training start, resume or rollback)."""
        self.losses_ok_step = step  # the last round whose losses were checked finite
        self.weights_ok_step = step  # the last round whose weights were checked finite

    def _stop(self) -> None:
        if getattr(self, "model", None) is not None:
            self.model.stop_training = True

    def _check_losses(self, logs) -> dict:
        step = int(self.gan.round.numpy())
        losses = {k: float(logs[k]) for k in ("d_loss", "g_loss") if k in logs}
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            self._stop()
            raise NonFiniteLoss(", ".join(f"{k}={v}" for k, v in bad.items()), step, self.losses_ok_step + 1)
        self.losses_ok_step = step
        return losses

    def _check_weights(self) -> None:
        step = int(self.gan.round.numpy())
        if not weights_finite(self.gan):
            self._stop()
            raise NonFiniteLoss("weights", step, self.weights_ok_step + 1)
        self.weights_ok_step = step

    def on_train_batch_end(self, batch, logs=None):
        # logs hold the running means of this block: once a loss is NaN/inf it stays so until the block ends
        self._check_losses(logs or {})

    def on_epoch_end(self, epoch, logs=None):
        losses = self._check_losses(logs or {})
        self._check_weights()
        step = int(self.gan.round.numpy())
        t = self.cfg.train
        if step % t.eval_every == 0 or step >= t.steps:
            self.evaluate(step, losses)
        if step % t.checkpoint_every == 0 or step >= t.steps:
            self.checkpoint()

    def evaluate(self, step: int, losses: dict) -> dict:
        n = int(self.cfg.metrics.num_samples)
        fake, labels = evaluation_samples(self.gan, self.cfg, n)
        metrics = self.evaluator(fake, labels)
        row = {"step": step, **{k: _clean(v) for k, v in losses.items()},
               **{k: _clean(v) for k, v in metrics.items()}, "time": round(time.time() - self.t0, 3)}
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        self.snapshot(step, fake, labels)
        self.last_row = row
        if self.progress is not None and self.data.primary_metric in metrics:
            self.progress.metric_value = float(metrics[self.data.primary_metric])
        return row

    def snapshot(self, step: int, fake: np.ndarray, labels) -> None:
        keep = min(len(fake), 1000 if self.data.kind == "toy2d" else 100)
        extras = {"fake": fake[:keep]}
        if labels is not None:
            extras["labels"] = np.asarray(labels[:keep])
        extras.update(snapshot_extras(self.data, self.gan, fake[:keep]))
        np.savez_compressed(self.run_dir / "samples" / f"step_{step:08d}.npz", **extras)
        if hasattr(self.data, "write_snapshot_image"):  # image data: samples/step_XXXXXXXX.png grid
            self.data.write_snapshot_image(fake, labels, self.run_dir / "samples" / f"step_{step:08d}")

    def checkpoint(self) -> None:
        step = int(self.gan.round.numpy())
        if step != self.last_saved_step:
            if self.weights_ok_step != step:
                self._check_weights()  # never write non-finite weights
            save_checkpoint(self.gan, self.cfg, self.run_dir, int(self.cfg.train.keep_checkpoints))
            self.last_saved_step = step
