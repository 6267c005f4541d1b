"""The training-side stabilisation techniques (docs/techniques.md): ``GAN`` arguments from the config (its checks: gan_cli.config.techniques).

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


from omegaconf import DictConfig

from gan_cli.config.schedule import critic_schedule, slot_stride

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
