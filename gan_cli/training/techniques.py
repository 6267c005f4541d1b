"""Config glue for the training-side stabilisation techniques (docs/techniques.md): checks and ``GAN`` arguments.

| option | technique | code |
|---|---|---|
| ``loss.feature_matching`` w, ``loss.feature_matching_only`` | feature matching G loss (Salimans et al. 2016) | ``GAN.generator_loss``, ``losses.feature_matching_loss`` |
| ``loss.r1_weight`` gamma | R1 penalty on real data (Mescheder et al. 2018) | ``GAN.discriminator_loss``, ``losses.r1_penalty`` |
| ``train.unroll_steps`` k | unrolled GAN (Metz et al. 2017) | ``gan_cli.training.unroll`` |
| ``train.g_ema`` d | EMA of G's weights for sampling/evaluation | ``gan_cli.training.ema`` |
| ``train.n_critic`` ``{round: count}`` | critic schedule | ``gan_cli.config.schedule`` |
| ``model.discriminator.spectral_norm`` | spectral normalisation of D (Miyato et al. 2018) | ``models.spectral`` |
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from gan_cli.core.errors import ConfigError
from gan_cli.config.schedule import critic_schedule, slot_stride

# loss.* keys that configure the training step, not the loss family's functions
LOSS_KEYS = ("feature_matching", "feature_matching_only", "r1_weight")
# models whose discriminator has a spectral_norm switch
SPECTRAL_NORM_MODELS = ("mlp", "dcgan", "csm_mlp")


def _weight(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ConfigError(f"{where} must be a number >= 0 (0 = off), got {value!r}")
    return float(value)


def check(cfg: DictConfig) -> None:
    """One-line ConfigError for a bad technique option (called by ``config.validate``)."""
    loss, train = cfg.loss, cfg.train
    fm = _weight("loss.feature_matching", loss.get("feature_matching", 0.0))
    _weight("loss.r1_weight", loss.get("r1_weight", 0.0))
    only = loss.get("feature_matching_only", False)
    if not isinstance(only, bool):
        raise ConfigError(f"loss.feature_matching_only must be true or false, got {only!r}")
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
    spectral = disc.get("spectral_norm", False) if hasattr(disc, "get") else False
    if not isinstance(spectral, bool):
        raise ConfigError(f"model.discriminator.spectral_norm must be true or false, got {spectral!r}")
    if spectral and (cfg.model.get("name") not in SPECTRAL_NORM_MODELS or disc.get("activation") == "maxout"):
        models = ", ".join(SPECTRAL_NORM_MODELS)
        raise ConfigError(f"model.discriminator.spectral_norm=true is supported by model={models} and does not "
                          "support activation maxout (its pieces are not one Dense kernel); change the model or "
                          "remove it")


def gan_kwargs(cfg: DictConfig) -> dict:
    """The technique arguments of ``GAN(...)`` for a resolved config (n_critic: the count of round 0;
    ``train.py`` sets the count of each schedule segment before training it)."""
    loss, train = cfg.loss, cfg.train
    return {"n_critic": critic_schedule(train.n_critic)[0],
            "slot_stride": slot_stride(train.n_critic, int(train.n_gen)),
            "feature_matching": float(loss.get("feature_matching", 0.0)),
            "feature_matching_only": bool(loss.get("feature_matching_only", False)),
            "r1_weight": float(loss.get("r1_weight", 0.0)),
            "unroll_steps": int(train.get("unroll_steps", 0)),
            "g_ema": float(train.get("g_ema", 0.0))}
