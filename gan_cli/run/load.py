"""Loading a trained GAN from a run folder or checkpoint, for sampling, evaluation, export and reports."""

from __future__ import annotations

from pathlib import Path

from gan_cli.config.resolve import apply_metric_options, with_train_defaults
from gan_cli.data.build import build_dataset
from gan_cli.training.build import build_gan


def load_for_inference(path: Path, data=None):
    """(resolved config, dataset, GAN with the checkpoint's weights) from a run folder or checkpoint file.

    ``data``: the run's dataset when the caller has already built it (it is not built again)."""
    from gan_cli.run.checkpoint import latest_checkpoint, read_config, restore

    ckpt = latest_checkpoint(Path(path))
    cfg = with_train_defaults(read_config(ckpt))  # a checkpoint from an older version lacks newer keys
    if data is None:
        data = build_dataset(cfg.dataset)
    apply_metric_options(cfg, data)
    gan = build_gan(cfg, data)
    restore(gan, ckpt, optimizers=False)
    return cfg, data, gan
