"""``train(cfg)``: one ``gan train`` job: build data, models and optimizers from a composed config,
train with ``Model.fit`` into a run folder, evaluate, checkpoint and write the report.

Importable by tests and sweepers; the Hydra entry point only calls it. Returns the final
metrics as a flat dict of floats (what a sweeper optimises).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gan_cli.config.resolve import with_train_defaults
from gan_cli.core.errors import UserError
from gan_cli.data.build import build_dataset
from gan_cli.metrics import evaluator_for
from gan_cli.report import background
from gan_cli.training.build import block_rounds, build_gan, device_line, steps_per_execution


def _trim_metrics(run_dir: Path, last_step: int) -> None:
    """Drop metrics.jsonl rows after ``last_step`` (they will be recomputed after a resume or a
    rollback) and any half-written row a killed process left at the end."""
    from gan_cli.run.files import read_rows

    path = run_dir / "metrics.jsonl"
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in read_rows(path) if r["step"] <= last_step))


def _last_row(run_dir: Path, step: int) -> dict | None:
    from gan_cli.run.files import read_rows

    rows = read_rows(run_dir / "metrics.jsonl")
    return rows[-1] if rows and rows[-1]["step"] == step else None


class _GracefulStop:
    """SIGINT (Ctrl-C) and SIGTERM during training: the first one asks training to stop after the
    current compiled call (so the block's metrics and the checkpoint stay consistent); the caller
    then writes a final checkpoint and exits 130 (SIGINT) or 143 (SIGTERM). A second signal stops
    at once (KeyboardInterrupt). Only the main thread can install signal handlers; elsewhere this
    is a no-op and Python's default Ctrl-C behaviour applies."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        return False

    def callback(self):
        """A Keras callback that ends ``fit`` at the next call boundary once a signal arrived."""
        import keras

        stop = self

        class StopOnSignal(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if stop.signum is not None:
                    self.model.stop_training = True

            # after the block's evaluation/checkpoint (this callback runs after RunMonitor), so a
            # signal that arrives while they run stops fit before the next block starts
            on_epoch_end = on_epoch_begin = on_train_batch_end

        return StopOnSignal()


@contextlib.contextmanager
def _signals_ignored():
    """Block SIGINT/SIGTERM while the final checkpoint is written (a second Ctrl-C must not cut it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


@contextlib.contextmanager
def _ends_tracker(tracker):
    """Mark the experiment-tracking run failed when training raises."""
    try:
        yield
    except BaseException:
        if tracker is not None:
            tracker.finish(status="FAILED")
        raise


def _state(gan) -> list:
    """An in-memory copy of everything a checkpoint holds (used to roll back before the first checkpoint)."""
    from gan_cli.run.checkpoint import state_groups

    variables = [v for _, group in state_groups(gan) for v in group] + [gan.round]
    return [(v, np.array(v.numpy())) for v in variables]


def _learning_rates(gan) -> tuple[float, float]:
    return (float(np.asarray(gan.g_optimizer.learning_rate)), float(np.asarray(gan.d_optimizer.learning_rate)))


def _fit(gan, data, cfg: DictConfig, monitor, position: int, stop: _GracefulStop, extra=()) -> None:
    """Train from round ``position`` to ``cfg.train.steps``; a resume or rollback that lands inside
    a block (an interrupt checkpoint) first finishes that block. Returns early on a signal."""
    from gan_cli.callbacks.monitor import ProgressBar

    steps, block, spe = int(cfg.train.steps), block_rounds(cfg), steps_per_execution(cfg)
    progress = ProgressBar(steps, position, spe, data.primary_metric, enabled=bool(cfg.train.progress))
    monitor.progress = progress
    callbacks = [progress, monitor, *extra, stop.callback()]  # extra (TensorBoard) reads monitor.last_row

    def stream(at: int, n_critic: int):  # real batches from round `at` on: a pure function of (seed, round)
        from gan_cli.training.distribute import stream_for

        ds = data.tf_dataset(int(cfg.train.batch_size), int(cfg.train.seed), start_step=at,
                             batches_per_step=n_critic)
        return stream_for(ds, int(cfg.train.batch_size), gan.distribute_strategy)

    from gan_cli.config.schedule import critic_schedule, critic_segments

    # schedule changes fall on multiples of spe too, so the step is traced once per segment
    spe = math.gcd(spe, *critic_schedule(cfg.train.n_critic))
    try:
        # one segment per train.n_critic count (a single one unless it is a schedule); each fit call ends
        # on a block boundary or a segment end, so evaluations and checkpoints keep their rounds
        for first, end, n_critic in critic_segments(cfg.train.n_critic, position, steps):
            for start, rounds, epochs in _fit_calls(first, end, block):
                if stop.signum is not None:
                    return
                # interrupts fall between compiled calls; a partial block may still need a shorter call
                calls = math.gcd(spe, rounds)
                _set_round_shape(gan, n_critic, calls)
                progress.steps_per_call = calls
                gan.fit(stream(start, n_critic), epochs=start // block + epochs, steps_per_epoch=rounds,
                        initial_epoch=start // block, verbose=0, shuffle=False, callbacks=callbacks)
    finally:
        progress.close()


def _fit_calls(start: int, end: int, block: int) -> list[tuple[int, int, int]]:
    """``fit`` calls ``(first round, rounds per epoch, epochs)`` that train rounds ``start..end-1`` with every
    epoch ending on a multiple of ``block`` or at ``end``: a partial block, whole blocks, a partial block."""
    calls, head = [], min((-start) % block, end - start)
    if head:
        calls.append((start, head, 1))
        start += head
    if (end - start) // block:
        calls.append((start, block, (end - start) // block))
        start += block * ((end - start) // block)
    if end > start:
        calls.append((start, end - start, 1))
    return calls


def _set_round_shape(gan, n_critic: int, steps_per_execution: int) -> None:
    """Discriminator updates per round and rounds per compiled call; the step is traced again when they change."""
    if (gan.n_critic, gan.steps_per_execution) != (n_critic, steps_per_execution):
        gan.n_critic, gan.steps_per_execution = int(n_critic), int(steps_per_execution)
        gan.train_function = None  # Keras builds it again at the next fit


def _write_report(run_dir: Path) -> None:
    """RUN/report.html at the end of training; a failure is a warning (the run itself succeeded)."""
    try:
        from gan_cli.report import write_report

        print(f"report: {write_report(run_dir)}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the report is a by-product; say how to redo it
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"warning: could not write the report ({message}); retry with: gan report {run_dir}", file=sys.stderr)


def resolve_for_this_machine(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``train.mixed_precision=true`` turned into the type this machine computes in, which the
    run folder keeps so that resume and reproduce use it on any machine."""
    if cfg.train.mixed_precision is True:
        from gan_cli.training.precision import compute_dtype

        cfg.train.mixed_precision = compute_dtype(True)
    return cfg


def train(cfg: DictConfig, run_dir: str | Path | None = None, resume: bool = False,
          report_later: bool = False) -> dict:
    """Train the GAN described by ``cfg`` into ``run_dir`` (default: Hydra's run folder).

    With ``resume=True`` continue from the newest checkpoint in ``run_dir``. Returns the
    final metrics (losses and quality metrics of the last evaluation).

    ``train.report=true``: the report is written before returning, unless ``report_later`` is set and
    ``gan_cli.report.background.in_background(cfg)``: then the caller starts it in a process of its own once
    it has marked the run done (``background.after_done``), as ``gan train`` and ``gan resume`` do.

    Faults: Ctrl-C (SIGINT, exit 130) and SIGTERM (exit 143) stop after the current compiled
    call, write a final checkpoint and print how to resume; a NaN/Inf loss or weight stops
    with a UserError naming the step (``train.on_nan=stop``) or reloads the last good
    checkpoint with lower learning rates (``train.on_nan=rollback``, at most
    ``train.max_rollbacks`` times); an OSError while writing the run folder (disk full,
    read-only) becomes a one-line UserError.
    """
    from gan_cli.config import resolve as config_mod
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    cfg = with_train_defaults(cfg)
    config_mod.validate(cfg)
    data = build_dataset(cfg.dataset)
    cfg = resolve_for_this_machine(config_mod.resolve(cfg, data))
    data.prepare()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    # op determinism is process-wide: switched on for this run only (sweeps run jobs in one process)
    from gan_cli.core.tf_context import disable_op_determinism, op_determinism

    determinism = bool(cfg.train.deterministic) and not op_determinism()
    if determinism:
        tf.config.experimental.enable_op_determinism()
    try:
        return _train(cfg, data, run_dir, resume, report_later)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise UserError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}{where}; "
                        "free some space or choose a writable hydra.run.dir") from None
    finally:
        if determinism:
            disable_op_determinism()


def _train(cfg: DictConfig, data, run_dir: Path, resume: bool, report_later: bool = False) -> dict:
    from gan_cli.callbacks.monitor import NonFiniteLoss, RunMonitor, weights_finite
    from gan_cli.run.checkpoint import checkpoint_path, latest_checkpoint, remove_partial, restore, save_checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg))

    t_start = time.time()
    from gan_cli.training import distribute
    strategy = distribute.make_strategy(cfg.train.strategy)  # train.strategy: before TensorFlow's runtime starts
    distribute.check_batch(int(cfg.train.batch_size), int(cfg.model.get("pack", 1)), strategy)
    with distribute.scope(strategy):  # networks, optimizers and the GAN's variables mirrored on every replica
        gan = build_gan(cfg, data)
    start = 0
    if resume:
        remove_partial(run_dir)
        start = restore(gan, latest_checkpoint(run_dir))
        _trim_metrics(run_dir, start)
    steps = int(cfg.train.steps)
    from gan_cli.training import precision
    half = precision.compute_dtype(cfg.train.get("mixed_precision", False))
    print(f"gan-cli: {cfg.loss.name} on {data.name} ({data.kind}, sample shape {tuple(data.sample_shape)}), "
          f"model {cfg.model.name}, optimizer {cfg.optimizer.name}, n_critic {cfg.train.n_critic}, "
          f"{steps} steps, device {device_line()}, XLA {'on' if gan.jit_compile else 'off'}"
          + (f", mixed precision {half}" if half else "") + f"; run folder {run_dir}"
          + (f"; resuming at step {start}" if resume else ""), file=sys.stderr)
    if cfg.train.jit_compile is True and not gan.jit_compile:  # Keras's own check (keras Trainer.compile)
        print("warning: train.jit_compile=true is off for this run: Keras compiles no XLA step under op "
              "determinism (train.deterministic=true) or with a layer that does not support XLA", file=sys.stderr)
    warning = precision.warning(half)
    if warning:
        print(warning, file=sys.stderr)

    if strategy is not None:
        print(f"train.strategy: {distribute.describe(strategy)}", file=sys.stderr)

    evaluator = evaluator_for(data, int(cfg.metrics.num_samples), int(cfg.train.seed))
    monitor = RunMonitor(gan, data, cfg, run_dir, evaluator, None)
    if resume:
        monitor.last_saved_step = start  # the checkpoint it resumed from is on disk
    if start >= steps:  # resuming a finished run: report its last row instead of logging the step twice
        monitor.last_row = _last_row(run_dir, start)
    tensorboard = None
    if cfg.train.tensorboard:
        from gan_cli.report.tensorboard import TensorBoardCallback

        tensorboard = TensorBoardCallback(run_dir, data, monitor)
    extra = [tensorboard] if tensorboard is not None else []
    tracker = None
    if cfg.train.get("logger") == "mlflow":  # params now, metrics per evaluation, artifacts at the end
        from gan_cli.report.mlflow_logger import MlflowLogger

        tracker = MlflowLogger(run_dir, cfg, monitor)
        extra.append(tracker)
    from gan_cli.run import objective
    extra += [c for c in [objective.callback(monitor, cfg.metrics.get("objective"), data.name)] if c is not None]
    initial = _state(gan) if cfg.train.on_nan == "rollback" else []  # for a rollback before the first checkpoint
    position, rollbacks, hard_stop = start, 0, False
    with _GracefulStop() as stop, _ends_tracker(tracker):
        while True:
            try:
                _fit(gan, data, cfg, monitor, position, stop, extra)
                break
            except KeyboardInterrupt:  # a second signal, or Ctrl-C where no handler could be installed
                hard_stop = True
                break
            except NonFiniteLoss as exc:
                if monitor.last_saved_step >= 0:
                    good = f"the last good checkpoint {checkpoint_path(run_dir, monitor.last_saved_step).name} is kept"
                else:
                    good = "no checkpoint was written before it"
                if cfg.train.on_nan != "rollback":
                    raise UserError(f"training stopped: {exc} (train.on_nan=stop); {good} in {run_dir}/checkpoints; "
                                    "lower the learning rates, change the loss, or set train.on_nan=rollback") from None
                lr_g, lr_d = _learning_rates(gan)
                if rollbacks >= int(cfg.train.max_rollbacks):
                    raise UserError(f"training stopped: {exc} again after {rollbacks} rollback(s) "
                                    f"(train.max_rollbacks={cfg.train.max_rollbacks}, learning rates now "
                                    f"g {lr_g:.3g}, d {lr_d:.3g}); {good} in {run_dir}/checkpoints; "
                                    "lower the learning rates or change the loss") from None
                rollbacks += 1
                if monitor.last_saved_step >= 0:
                    position = restore(gan, checkpoint_path(run_dir, monitor.last_saved_step))
                else:
                    for variable, value in initial:
                        variable.assign(value)
                    position = int(gan.round.numpy())
                factor = float(cfg.train.nan_lr_factor)
                gan.g_optimizer.learning_rate = lr_g * factor
                gan.d_optimizer.learning_rate = lr_d * factor
                if getattr(gan, "e_optimizer", None) is not None:  # GN-GAN's encoder (gan_cli.training.gngan)
                    gan.e_optimizer.learning_rate = float(np.asarray(gan.e_optimizer.learning_rate)) * factor
                _trim_metrics(run_dir, position)
                monitor.last_row = None
                monitor.reset_checks(position)
                print(f"warning: {exc}; rolled back to step {position} and lowered the learning rates "
                      f"x{factor:g} to g {lr_g * factor:.3g}, d {lr_d * factor:.3g} "
                      f"(rollback {rollbacks} of at most {cfg.train.max_rollbacks})", file=sys.stderr)
        signum = stop.signum if stop.signum is not None else (signal.SIGINT if hard_stop else None)
        if signum is not None and not hard_stop and int(gan.round.numpy()) >= steps:
            signum = None  # the signal came after the last step: just finish

    if signum is not None:
        if tensorboard is not None:
            tensorboard.close()
        step = int(gan.round.numpy())
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        with _signals_ignored():
            if step == monitor.last_saved_step:
                saved = f"checkpoint {checkpoint_path(run_dir, step).name} is up to date"
            elif weights_finite(gan):
                path = save_checkpoint(gan, cfg, run_dir, int(cfg.train.keep_checkpoints))
                saved = f"checkpoint {path.name} written"
            else:
                saved = "weights not finite, so no checkpoint written"
        print(f"interrupted ({name}) at step {step}; {saved}. Continue with: gan resume {run_dir}",
              file=sys.stderr)
        if tracker is not None:
            tracker.finish(status="KILLED")
        raise SystemExit(143 if signum == signal.SIGTERM else 130)

    final = monitor.last_row
    if final is None or final["step"] != int(gan.round.numpy()):
        final = monitor.evaluate(int(gan.round.numpy()), {})
        monitor.checkpoint()
    summary = ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, float) and k != "time")
    print(f"done: step {final['step']} in {time.time() - t_start:.1f}s: {summary}", file=sys.stderr)
    if tensorboard is not None:
        tensorboard.close()  # logs a final row evaluated outside fit
    if cfg.train.report and not (report_later and background.in_background(cfg)):
        _write_report(run_dir)
    if tracker is not None:
        tracker.finish(gan)
    return {k: v for k, v in final.items() if isinstance(v, (int, float)) and v is not None}
