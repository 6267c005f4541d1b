"""Config checks and resolution.

``validate(cfg)`` checks types, ranges and cross-field rules of the composed config
without importing TensorFlow or building data; ``resolve(cfg, data)`` fills the null
recommendations (n_critic from the loss, latent size and run length from the dataset) and
returns a fully concrete config. The recommended model and optimizer are chosen by Hydra
composition: each dataset config names its model and each loss config its optimizer in its
defaults list.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from gan_cli.config.checks import boolean, number
from gan_cli.config.optimizer import validate_optimizer
from gan_cli.config.techniques import check_model_techniques, check_training_techniques
from gan_cli.core.errors import ConfigError
from gan_cli.losses import FAMILIES as LOSS_FAMILIES


# key -> (type, minimum, allow null)
TRAIN_SCHEMA: dict[str, tuple[type, float | None, bool]] = {
    "steps": (int, 1, True),
    "batch_size": (int, 1, True),
    "n_critic": (object, None, True),  # a count or a {round: count} schedule: checked by gan_cli.config.schedule
    "n_gen": (int, 1, False),
    "seed": (int, 0, False),
    "eval_every": (int, 1, True),
    "checkpoint_every": (int, 1, True),
    "keep_checkpoints": (int, 1, False),
    "steps_per_execution": (int, 1, True),
    "jit_compile": (object, None, True),  # true | false | auto (null too): checked in validate
    "mixed_precision": (object, None, False),  # false | true | float16 | bfloat16: checked in validate
    "progress": (bool, None, False),
    "deterministic": (bool, None, False),
    "on_nan": (str, None, False),
    "nan_lr_factor": (float, None, False),
    "max_rollbacks": (int, 0, False),
    "tensorboard": (bool, None, False),
    "report": (bool, None, False),
    "overwrite": (bool, None, False),
    "logger": (str, None, True),
    "unroll_steps": (int, 0, False),
    "g_ema": (float, 0, False),
    "strategy": (str, None, False),
    "fast": (bool, None, False),
}
ON_NAN = ("stop", "rollback")
# Integers above this are rejected (seeds, counts and sizes all end up in int32/int64 tensors).
MAX_INT = 2**31 - 1
LATENT_SCHEMA = {"dim": (int, 1, True), "distribution": (str, None, False)}
METRICS_SCHEMA = {"num_samples": (int, 2, False), "parzen": (bool, None, False), "objective": (str, None, True)}
LOGGERS = ("mlflow",)
PRECISION_SETTINGS = (False, True, "float16", "bfloat16")  # train.mixed_precision
STRATEGIES = ("none", "mirrored", "multiworker")  # train.strategy (gan_cli.training.distribute)


def conf_dir() -> Path:
    """The packaged ``conf/`` folder (``gan_cli.conf`` in an installed wheel)."""
    try:
        from importlib.resources import files

        path = Path(str(files("gan_cli.conf")))
        if (path / "config.yaml").exists():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "conf"


def _check_value(section: str, key: str, value: Any, spec: tuple[type, float | None, bool]) -> None:
    typ, minimum, nullable = spec
    where = f"{section}.{key}"
    if value is None:
        if not nullable:
            raise ConfigError(f"{where} must be set (got null)")
        return
    if typ is bool:
        boolean(where, value)
        return
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if typ is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if typ is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where} must be >= {minimum:g}, got {value}")
    if typ is int and value > MAX_INT:
        raise ConfigError(f"{where} must be <= {MAX_INT}, got {value}")


def _check_section(cfg: DictConfig, section: str, schema: dict) -> None:
    node = cfg.get(section)
    if not isinstance(node, DictConfig):
        raise ConfigError(f"'{section}' must be a config section")
    for key in node:
        if key not in schema:
            import difflib

            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"did you mean {section}.{close[0]}? " if close else ""
            raise ConfigError(f"unknown key {section}.{key}; {hint}valid: {', '.join(schema)}")
    for key, spec in schema.items():
        _check_value(section, key, node.get(key), spec)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for any invalid key, type, range or combination."""
    for section in ("model", "optimizer"):  # chosen by the dataset / loss config's defaults list
        if not isinstance(cfg.get(section), DictConfig):
            raise ConfigError(f"no {section} is selected (a dataset config of your own must name one in its "
                              f"defaults list); add +{section}=NAME")
    _check_section(cfg, "train", TRAIN_SCHEMA)
    _check_section(cfg, "latent", LATENT_SCHEMA)
    _check_section(cfg, "metrics", METRICS_SCHEMA)
    _check_nan_policy(cfg.train)
    if cfg.train.logger not in (None, *LOGGERS):
        raise ConfigError(f"train.logger '{cfg.train.logger}' unknown; valid: null, {', '.join(LOGGERS)}")
    if cfg.train.logger == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise ConfigError('train.logger=mlflow needs MLflow: pip install "gan-cli[mlflow]" (or pip install mlflow), '
                          "or remove train.logger")
    if not (isinstance(cfg.train.jit_compile, bool) or cfg.train.jit_compile == "auto"):
        raise ConfigError(f"train.jit_compile must be true, false or auto, got {cfg.train.jit_compile!r}")
    value = cfg.train.mixed_precision
    if not any(value is s if isinstance(s, bool) else value == s for s in PRECISION_SETTINGS):
        raise ConfigError(f"train.mixed_precision must be false, true, float16 or bfloat16, got {value!r}")
    if cfg.train.strategy not in STRATEGIES:
        raise ConfigError(f"train.strategy '{cfg.train.strategy}' unknown; valid: {', '.join(STRATEGIES)}")
    if cfg.latent.distribution not in ("gaussian", "uniform"):
        raise ConfigError(f"latent.distribution '{cfg.latent.distribution}' unknown; valid: gaussian, uniform")

    loss = cfg.loss
    if loss.get("name") not in LOSS_FAMILIES:
        raise ConfigError(f"unknown loss '{loss.get('name')}'; valid: {', '.join(LOSS_FAMILIES)}")
    number("loss.label_smoothing", loss.get("label_smoothing", 1.0), 0.0, 1.0, low_open=True)
    if not LOSS_FAMILIES[loss.name].get("label_smoothing") and loss.get("label_smoothing", 1.0) != 1.0:
        smoothed = [name for name, props in LOSS_FAMILIES.items() if props.get("label_smoothing")]
        raise ConfigError(f"loss.label_smoothing applies to {', '.join(smoothed)}, not {loss.name}; remove it")
    if "clip_value" in loss:
        number("loss.clip_value", loss.clip_value, 0.0, low_open=True)
    if "gp_weight" in loss:
        number("loss.gp_weight", loss.gp_weight, 0.0)
    for key in ("a", "b", "c"):
        if key in loss:
            number(f"loss.{key}", loss[key], float("-inf"))

    for net in ("generator", "discriminator"):
        if net not in cfg.optimizer:
            raise ConfigError(f"optimizer.{net} is missing; give both generator and discriminator settings")
        validate_optimizer(net, cfg.optimizer[net])

    if "generator" not in cfg.model:
        raise ConfigError(f"model '{cfg.model.get('name')}' has no generator section")
    _check_dataset_keys(cfg.dataset)
    _check_pack(cfg)
    check_model_techniques(cfg)  # minibatch discrimination, virtual batch norm, GN-GAN
    check_training_techniques(cfg)  # feature matching, R1, unrolling, generator EMA, n_critic schedule, spectral norm


PACK_MODELS = ("mlp", "maxout")


def _check_pack(cfg: DictConfig) -> None:
    """``model.pack`` (PacGAN): an integer >= 1; > 1 only for unconditional mlp/maxout models and a
    batch size that is a multiple of it (checked again by ``resolve`` once the batch size is known)."""
    pack = cfg.model.get("pack", 1)
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ConfigError(f"model.pack must be an integer >= 1 (1 = no packing), got {pack!r}")
    if pack == 1:
        return
    name = cfg.model.get("name")
    if name not in PACK_MODELS:
        raise ConfigError(f"model.pack={pack} (PacGAN) is supported by model=mlp and model=maxout, not "
                          f"'{name}'; pick one of those or set model.pack=1")
    if cfg.model.get("conditional", False):
        raise ConfigError(f"model.pack={pack} (PacGAN) does not support model.conditional=true; "
                          "set model.pack=1 or model.conditional=false")
    batch = cfg.train.get("batch_size")
    if batch is not None and batch % pack:
        raise ConfigError(f"train.batch_size={batch} must be a multiple of model.pack={pack} "
                          "(the discriminator sees batch_size/pack packs of pack samples)")


def _check_nan_policy(train: DictConfig) -> None:
    if train.on_nan not in ON_NAN:
        raise ConfigError(f"train.on_nan '{train.on_nan}' unknown; valid: {', '.join(ON_NAN)}")
    factor = train.nan_lr_factor
    if not (0.0 < factor < 1.0):  # also rejects NaN
        raise ConfigError(f"train.nan_lr_factor must be in (0, 1) (the learning rates are multiplied by it "
                          f"on each rollback), got {factor}")


def _check_dataset_keys(node: DictConfig) -> None:
    """Compare the dataset keys with its class's constructor, without building any data."""
    target = node.get("_target_")
    if not isinstance(target, str) or "." not in target:
        raise ConfigError("dataset has no _target_; pick one with dataset=NAME")
    module, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"dataset target {target} cannot be imported ({exc})") from None
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p != "self"]
    for key in node:
        if key != "_target_" and key not in valid:
            raise ConfigError(f"unknown key dataset.{key}; valid: {', '.join(valid)}")


def apply_metric_options(cfg: DictConfig, data) -> None:
    """Pass ``metrics.*`` switches that the dataset's evaluator reads on to ``data``."""
    if cfg.metrics.get("parzen", False):
        if not hasattr(data, "parzen"):
            raise ConfigError(f"metrics.parzen=true applies to image data sets, not '{data.name}'; remove it")
        data.parzen = True  # the image evaluator reads it (same switch as dataset.parzen=true)


def resolve(cfg: DictConfig, data) -> DictConfig:
    """A copy of ``cfg`` with every null recommendation filled in for ``data``."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(cfg):
        if "representation" in cfg.dataset and cfg.dataset.representation is None:
            # a data set with several model-space encodings (csm) takes the one the model declares
            cfg.dataset.representation = cfg.model.get("representation") or data.representation
            data.representation = cfg.dataset.representation
        if data.kind == "csm" and data.num_classes >= 2 and not cfg.model.get("conditional", False):
            # several frequency lines (dataset.freq_index=all or a list): one model conditioned on the line
            cfg.model.conditional = True
        if cfg.train.n_critic is None:
            cfg.train.n_critic = int(cfg.loss.get("default_n_critic", 1))
        for key, value in data.default_train.items():  # steps, batch_size, eval_every, checkpoint_every, spe
            if cfg.train.get(key) is None:
                cfg.train[key] = int(value)
        if cfg.latent.dim is None:
            cfg.latent.dim = int(data.default_latent_dim)
        for net in ("generator", "discriminator"):  # a momentum ramp given in epochs of this data set
            opt = cfg.optimizer[net]
            if opt.get("momentum_epochs") is not None and opt.get("momentum_steps") is None:
                n_train = int(data.arrays()[0].shape[0])
                opt.momentum_steps = max(1, round(float(opt.momentum_epochs) * n_train / int(cfg.train.batch_size)))
    for net in ("generator", "discriminator"):
        validate_optimizer(net, cfg.optimizer[net])
    apply_metric_options(cfg, data)
    if cfg.model.get("conditional", False) and data.num_classes < 2:
        raise ConfigError(f"model.conditional=true needs a labelled dataset; '{data.name}' has no labels")
    _check_pack(cfg)  # batch_size is known now
    return cfg


def with_train_defaults(cfg: DictConfig) -> DictConfig:
    """``cfg`` with train/metrics keys added since it was written (e.g. a checkpoint's config from an older
    version given to ``gan resume``) filled from the packaged conf/config.yaml."""
    missing = [(section, k) for section, schema in (("train", TRAIN_SCHEMA), ("metrics", METRICS_SCHEMA))
               if section in cfg for k in schema if k not in cfg[section]]
    if not missing:
        return cfg
    defaults = OmegaConf.load(conf_dir() / "config.yaml")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(cfg):
        for section, key in missing:
            if key in defaults[section]:
                cfg[section][key] = defaults[section][key]
    return cfg
