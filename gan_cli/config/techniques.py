"""Config checks for minibatch discrimination, virtual batch norm and GN-GAN (no TensorFlow import).

Called by ``config.validate``; every problem is a one-line ``ConfigError`` naming the key and the fix.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from gan_cli.config.checks import boolean, integer, number
from gan_cli.config.schedule import critic_schedule
from gan_cli.core.errors import ConfigError

# models whose builders know minibatch discrimination and virtual batch norm
MBD_VBN_MODELS = ("mlp", "maxout", "dcgan")
# GN-GAN keys of conf/loss/gngan.yaml -> (minimum, maximum, minimum excluded)
GNGAN_KEYS: dict[str, tuple[float, float | None, bool]] = {
    "alpha": (0.0, 1.0, False),
    "lambda_r": (0.0, None, False),
    "lambda_p": (0.0, None, False),
    "lambda_m1": (0.0, None, False),
    "lambda_m2": (0.0, None, False),
    "sigma_z": (0.0, None, True),
    "sigma_x": (0.0, None, True),
}
GNGAN_OTHER_KEYS = ("name", "default_optimizer", "default_n_critic", "label_smoothing")


def _check_model(model: DictConfig) -> None:
    name = model.get("name")
    disc = model.get("discriminator") if isinstance(model.get("discriminator"), DictConfig) else {}
    gen = model.get("generator") if isinstance(model.get("generator"), DictConfig) else {}
    kernels = disc.get("mbd_kernels", 0)
    integer("model.discriminator.mbd_kernels", kernels, 0, "minibatch discrimination kernels; 0 = off")
    if kernels:
        integer("model.discriminator.mbd_dim", disc.get("mbd_dim", 5), 1, "dims per minibatch discrimination kernel")
    boolean("model.discriminator.mbd_average", disc.get("mbd_average", True))
    if "vbn_ref_size" in model:
        integer("model.vbn_ref_size", model.vbn_ref_size, 1, "rows of the virtual batch norm reference batch")
    virtual = [f"model.{net}.{key}" for net, node in (("generator", gen), ("discriminator", disc))
               for key in ("batch_norm", "norm") if node.get(key) == "virtual"]
    if name in ("mlp", "maxout"):
        for net, node in (("generator", gen), ("discriminator", disc)):
            if node.get("batch_norm", False) not in (False, True, "virtual"):
                raise ConfigError(f"model.{net}.batch_norm must be false, true or virtual, "
                                  f"got {node.get('batch_norm')!r}")
    elif name not in MBD_VBN_MODELS and (kernels or virtual):
        what = "model.discriminator.mbd_kernels" if kernels else virtual[0]
        raise ConfigError(f"{what} (minibatch discrimination / virtual batch norm) is supported by model="
                          f"{', '.join(MBD_VBN_MODELS)}, not '{name}'; pick one of those or remove it")


def _check_gngan(cfg: DictConfig) -> None:
    loss = cfg.loss
    for key in loss:
        if key not in GNGAN_KEYS and key not in GNGAN_OTHER_KEYS and key not in LOSS_KEYS:
            raise ConfigError(f"unknown key loss.{key} for loss=gngan; valid: {', '.join(GNGAN_KEYS)}")
    for key, (low, high, open_low) in GNGAN_KEYS.items():
        value = loss.get(key)
        if value is not None:
            number(f"loss.{key}", value, low, high, low_open=open_low)
    if cfg.model.get("pack", 1) != 1:
        raise ConfigError("loss=gngan does not support PacGAN packing (its gradient matching needs per-sample "
                          "gradients); set model.pack=1")
    if cfg.model.get("conditional", False):
        raise ConfigError("loss=gngan is unconditional; set model.conditional=false")


def check_model_techniques(cfg: DictConfig) -> None:
    """Raise ConfigError for a bad minibatch discrimination, virtual batch norm or GN-GAN setting."""
    _check_model(cfg.model)
    if cfg.loss.get("name") == "gngan":
        _check_gngan(cfg)


# loss.* keys that configure the training step, not the loss family's functions
LOSS_KEYS = ("feature_matching", "feature_matching_only", "r1_weight")
# models whose discriminator has a spectral_norm switch
SPECTRAL_NORM_MODELS = ("mlp", "dcgan", "csm_mlp")


def _weight(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ConfigError(f"{where} must be a number >= 0 (0 = off), got {value!r}")
    return float(value)


def check_training_techniques(cfg: DictConfig) -> None:
    """One-line ConfigError for a bad technique option (called by ``validate`` in gan_cli.config.resolve)."""
    loss, train = cfg.loss, cfg.train
    fm = _weight("loss.feature_matching", loss.get("feature_matching", 0.0))
    _weight("loss.r1_weight", loss.get("r1_weight", 0.0))
    only = boolean("loss.feature_matching_only", loss.get("feature_matching_only", False))
    if only and fm == 0:
        raise ConfigError("loss.feature_matching_only=true needs a feature-matching weight; "
                          "set loss.feature_matching > 0 (e.g. 1.0)")
    if train.get("n_critic") is not None:
        critic_schedule(train.n_critic)
    decay = train.get("g_ema", 0.0)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ConfigError(f"train.g_ema must be a decay in [0, 1) (0 = off, e.g. 0.999), got {decay!r}")
    if loss.get("name") == "gngan" and train.get("unroll_steps", 0):
        raise ConfigError("train.unroll_steps does not apply to loss=gngan (its generator step is gradient "
                          "matching); set train.unroll_steps=0")
    disc = cfg.model.get("discriminator")
    spectral = boolean("model.discriminator.spectral_norm",
                       disc.get("spectral_norm", False) if hasattr(disc, "get") else False)
    if spectral and (cfg.model.get("name") not in SPECTRAL_NORM_MODELS or disc.get("activation") == "maxout"):
        models = ", ".join(SPECTRAL_NORM_MODELS)
        raise ConfigError(f"model.discriminator.spectral_norm=true is supported by model={models} and does not "
                          "support activation maxout (its pieces are not one Dense kernel); change the model or "
                          "remove it")
