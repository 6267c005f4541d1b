"""Building a data set from its config node."""

from __future__ import annotations

from omegaconf import DictConfig

from gan_cli.core.errors import ConfigError, UserError


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
