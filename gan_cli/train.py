"""``train(cfg)``: build data, models and optimizers from a composed config and train with ``Model.fit``.

Importable by tests and sweepers; the Hydra entry point only calls it. Returns the final
metrics as a flat dict of floats (what a sweeper optimises).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gan_cli.errors import ConfigError, UserError


def build_dataset(dataset_cfg: DictConfig):
    """Instantiate the dataset node (``_target_``), turning constructor errors into ConfigError."""
    from hydra.utils import instantiate
    from hydra.errors import InstantiationException

    try:
        return instantiate(dataset_cfg, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise ConfigError(f"cannot build dataset '{dataset_cfg.get('name')}': {str(cause or exc).splitlines()[0]}") from None


def build_gan(cfg: DictConfig, data):
    """A compiled ``GAN`` for the resolved config ``cfg`` and dataset ``data``."""
    import keras

    from gan_cli.gan import GAN
    from gan_cli.losses import get_loss
    from gan_cli.models import get_builder
    from gan_cli.optimizers import build_optimizer

    keras.utils.set_random_seed(int(cfg.train.seed))
    conditional = bool(cfg.model.get("conditional", False))
    generator, discriminator = get_builder(cfg.model.name)(cfg.model, data, int(cfg.latent.dim), conditional)
    loss = get_loss(cfg.loss.name)
    params = {k: v for k, v in cfg.loss.items()
              if k not in ("name", "clip_value", "gp_weight", "default_optimizer", "default_n_critic")}
    gan = GAN(generator, discriminator, loss, params, latent_dim=int(cfg.latent.dim),
              latent_distribution=cfg.latent.distribution, n_critic=int(cfg.train.n_critic),
              n_gen=int(cfg.train.n_gen), clip_value=cfg.loss.get("clip_value"),
              gp_weight=cfg.loss.get("gp_weight", 0.0), seed=int(cfg.train.seed),
              conditional=conditional, num_classes=data.num_classes)
    gan.compile(build_optimizer(cfg.optimizer.generator), build_optimizer(cfg.optimizer.discriminator),
                steps_per_execution=_steps_per_execution(cfg), jit_compile=bool(cfg.train.jit_compile))
    return gan


def _block(cfg: DictConfig) -> int:
    """Rounds per Keras epoch: every evaluation and checkpoint falls on an epoch boundary."""
    t = cfg.train
    return math.gcd(math.gcd(int(t.eval_every), int(t.checkpoint_every)), int(t.steps))


def _steps_per_execution(cfg: DictConfig) -> int:
    return math.gcd(int(cfg.train.steps_per_execution), _block(cfg))


def load_for_inference(path: Path):
    """(resolved config, dataset, GAN with the checkpoint's weights) from a run folder or checkpoint file."""
    from gan_cli.checkpoint import latest_checkpoint, read_config, restore

    ckpt = latest_checkpoint(Path(path))
    cfg = read_config(ckpt)
    data = build_dataset(cfg.dataset)
    gan = build_gan(cfg, data)
    restore(gan, ckpt, optimizers=False)
    return cfg, data, gan


def _device_line() -> str:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return f"GPU ({', '.join(d.name for d in gpus)})" if gpus else "CPU"


def _trim_metrics(run_dir: Path, last_step: int) -> None:
    """Drop metrics.jsonl rows after ``last_step`` (they will be recomputed after a resume)."""
    path = run_dir / "metrics.jsonl"
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if json.loads(r)["step"] <= last_step]
        path.write_text("".join(r + "\n" for r in kept))


def train(cfg: DictConfig, run_dir: str | Path | None = None, resume: bool = False) -> dict:
    """Train the GAN described by ``cfg`` into ``run_dir`` (default: Hydra's run folder).

    With ``resume=True`` continue from the newest checkpoint in ``run_dir``. Returns the
    final metrics (losses and quality metrics of the last evaluation).
    """
    from gan_cli import config as config_mod

    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    config_mod.validate(cfg)
    data = build_dataset(cfg.dataset)
    cfg = config_mod.resolve(cfg, data)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from gan_cli.callbacks import NonFiniteLoss, ProgressBar, RunMonitor
    from gan_cli.checkpoint import latest_checkpoint, restore, save_checkpoint

    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg))

    t_start = time.time()
    gan = build_gan(cfg, data)
    start = 0
    if resume:
        start = restore(gan, latest_checkpoint(run_dir))
        _trim_metrics(run_dir, start)
    steps = int(cfg.train.steps)
    block = _block(cfg)
    print(f"gan-cli: {cfg.loss.name} on {data.name} ({data.kind}, sample shape {tuple(data.sample_shape)}), "
          f"model {cfg.model.name}, optimizer {cfg.optimizer.name}, n_critic {cfg.train.n_critic}, "
          f"{steps} steps, device {_device_line()}; run folder {run_dir}", file=sys.stderr)

    evaluator = data.evaluator(int(cfg.metrics.num_samples), int(cfg.train.seed))
    dataset = data.tf_dataset(int(cfg.train.batch_size), int(cfg.train.seed), start_step=start,
                              batches_per_step=int(cfg.train.n_critic))
    progress = ProgressBar(steps, start, _steps_per_execution(cfg), data.primary_metric,
                           enabled=bool(cfg.train.progress))
    monitor = RunMonitor(gan, data, cfg, run_dir, evaluator, progress)
    interrupted = False
    try:
        if start < steps:
            gan.fit(dataset, epochs=steps // block, steps_per_epoch=block, initial_epoch=start // block,
                    verbose=0, shuffle=False, callbacks=[progress, monitor])
    except KeyboardInterrupt:
        interrupted = True
    except NonFiniteLoss as exc:
        progress.close()
        raise UserError(f"{exc}; the last good checkpoint is kept in {run_dir}/checkpoints; "
                        "lower the learning rates or change the loss") from None
    finally:
        progress.close()
    if interrupted:
        path = save_checkpoint(gan, cfg, run_dir, int(cfg.train.keep_checkpoints))
        print(f"interrupted at step {int(gan.round.numpy())}; checkpoint {path.name} written. "
              f"Continue with: gan resume {run_dir}", file=sys.stderr)
        raise SystemExit(130)

    final = monitor.last_row
    if final is None or final["step"] != int(gan.round.numpy()):
        final = monitor.evaluate(int(gan.round.numpy()), {})
        monitor.checkpoint()
    summary = ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, float) and k != "time")
    print(f"done: step {final['step']} in {time.time() - t_start:.1f}s: {summary}", file=sys.stderr)
    return {k: v for k, v in final.items() if isinstance(v, (int, float)) and v is not None}
