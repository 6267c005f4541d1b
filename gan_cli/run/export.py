"""``gan export``: a run's generator as files that other programs load without gan-cli.

* ``.keras`` (``keras.models.load_model``): the generator (the EMA weights when ``train.g_ema`` is on)
  mapping ``z`` (and ``label`` for conditional models) to samples in model space, built from stock
  Keras layers and ``keras.ops`` only.
* ``saved_model`` (``tf.saved_model.load`` / TF Serving): a SavedModel whose ``generate(z[, label])``
  endpoint returns samples in the data's own units, as ``gan sample -o FILE.npy`` writes them (2D
  points as they are; images in pixel units; CSMs as complex matrices on the training scale).

Training graphs may hold speed tricks (custom gradients, fused kernels); exported models never do.
The generator is cloned with each layer called through ``_plain_call``:

* a layer with a ``plain(*inputs)`` method is replaced by what that method builds on the symbolic
  inputs: stock Keras layers (reusing or copying its weights) and ``keras.ops`` (the protocol any
  custom layer in ``gan_cli.models`` follows to be exportable);
* stock Keras layers are kept as they are;
* a custom layer without weights whose ``call`` uses only ``keras.ops`` is inlined op by op;
* anything else is an error naming the layer.

The written ``.keras`` file is checked to name no gan_cli class before it replaces ``PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

from gan_cli.core.errors import UserError

FORMATS = ("keras", "saved_model")


def _plain_call(layer, *args, **kwargs):
    """Call ``layer`` on symbolic inputs the way the exported graph should (module docstring)."""
    if hasattr(layer, "plain"):
        return layer.plain(*args)
    if type(layer).__module__.startswith("keras."):
        return layer(*args, **kwargs)
    if not layer.weights:
        return layer.call(*args)
    raise UserError(f"cannot export the generator: its layer {layer.name} ({type(layer).__name__}) has no "
                    "stock-Keras equivalent (a plain() method)")


def plain_generator(gan):
    """The generator that ``gan`` samples with (EMA when on) as a functional model of stock Keras parts."""
    import keras

    net = gan.ema_generator if getattr(gan, "ema_generator", None) is not None else gan.generator
    try:
        return keras.models.clone_model(net, clone_function=lambda layer: layer, call_function=_plain_call)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a layer whose call cannot be traced symbolically
        raise UserError(f"cannot export the generator: {str(exc).splitlines()[0]}") from None


def _gan_cli_classes(path: Path) -> list[str]:
    """Registered gan_cli class names in the config of ``.keras`` file ``path``."""
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    found = []

    def walk(node):
        if isinstance(node, dict):
            name = node.get("registered_name") or ""
            if isinstance(name, str) and name.startswith("gan_cli"):
                found.append(name)
            if str(node.get("module", "")).startswith("gan_cli"):
                found.append(f"{node.get('module')}.{node.get('class_name')}")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return sorted(set(found))


def export_keras(gan, path: Path) -> Path:
    """Write the plain generator to ``path`` (``.keras``) atomically; returns ``path``."""
    path = Path(path)
    model = plain_generator(gan)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.keras")
    try:
        model.save(tmp)
        leftover = _gan_cli_classes(tmp)
        if leftover:
            raise UserError(f"cannot export the generator: it still uses {', '.join(leftover)}; "
                            "give those layers a plain() method")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def user_space_fn(data):
    """``f(x, labels)`` mapping model-space samples to the data's own units with TensorFlow ops (the
    graph version of ``data.to_user_space``)."""
    import numpy as np
    import tensorflow as tf

    kind = getattr(data, "kind", "")
    if kind == "image":
        lo, hi = (float(v) for v in data.pixel_range)

        def images(x, labels):
            out = (tf.clip_by_value(x, -1.0, 1.0) + 1.0) * 0.5 * (hi - lo) + lo
            return out[..., 0] if out.shape[-1] == 1 else out

        return images
    if kind == "csm":
        rep = data.representation
        if rep == "csm":
            return lambda x, labels: tf.complex(x[..., 0], x[..., 1])
        if rep != "eigenvectors":
            raise UserError(f"--format saved_model supports CSM runs with dataset.representation csm or "
                            f"eigenvectors, not {rep}; export --format keras (model space) instead")
        data._load()
        per_line = getattr(data, "line_mean_spectrum", None)
        spectra = tf.constant(np.asarray(per_line if per_line is not None else data.mean_spectrum[None]),
                              tf.complex64)

        def csm(x, labels):  # C = V diag(lambda) V^H with the real data's mean normalised spectrum
            v = tf.complex(x[..., 0], x[..., 1])
            index = labels if (labels is not None and per_line is not None) else tf.zeros(tf.shape(x)[:1], tf.int32)
            lam = tf.gather(spectra, index)
            return tf.linalg.matmul(v * lam[:, None, :], v, adjoint_b=True)

        return csm
    return lambda x, labels: x


def export_saved_model(gan, data, path: Path) -> Path:
    """Write a SavedModel serving ``generate(z[, label])`` in the data's own units to folder ``path``."""
    import keras
    import tensorflow as tf

    path = Path(path)
    model = plain_generator(gan)
    to_user = user_space_fn(data)
    z_spec = tf.TensorSpec((None, int(gan.latent_dim)), tf.float32, name="z")
    archive = keras.export.ExportArchive()
    archive.track(model)
    if gan.conditional:
        label_spec = tf.TensorSpec((None,), tf.int32, name="label")
        archive.add_endpoint("generate", lambda z, label: to_user(model([z, label], training=False), label),
                             input_signature=[z_spec, label_spec])
    else:
        archive.add_endpoint("generate", lambda z: to_user(model(z, training=False), None), input_signature=[z_spec])
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(str(tmp), verbose=False)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def export_run(run: Path, output: Path, fmt: str = "keras", force: bool = False) -> Path:
    """``gan export RUN -o OUTPUT``: load the run's newest checkpoint and write its generator."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; valid: {', '.join(FORMATS)}")
    output = Path(output)
    if fmt == "keras" and output.suffix != ".keras":
        output = output.with_name(output.name + ".keras")
    if output.exists() and not force:
        raise UserError(f"{output} exists; choose another -o or add --force")
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: the folder {output.parent} does not exist")
    from gan_cli.run.load import load_for_inference

    _, data, gan = load_for_inference(Path(run))
    if fmt == "keras":
        return export_keras(gan, output)
    return export_saved_model(gan, data, output)
