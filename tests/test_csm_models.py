"""csm_mlp builder: shapes, output transform (unit/orthonormal columns, canonical phase, eigmode channel)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from gan_cli.core.errors import ConfigError  # noqa: E402
from gan_cli.models import get_builder  # noqa: E402
from gan_cli.models.csm import CsmOutputTransform  # noqa: E402


class FakeData:
    """Just what the builder needs: sample_shape and the encoding that gan_cli.models.csm.csm_output_transform reads."""

    name = kind = "csm"
    num_classes = 0
    canonical_phase = True

    def __init__(self, m=8, rep="eigenvectors", ref=7, orthonormal=False):
        self.sample_shape = (m, m, 3 if rep == "eigmode" else 2)
        self.representation, self.reference_mic, self.orthonormal = rep, ref, orthonormal

    def prepare(self):
        pass


CFG = {"generator": {"hidden": [32, 64], "norm": "layer", "activation": "leaky_relu"},
       "discriminator": {"filters": [8, 16], "kernel_size": 3, "strides": 2}}


def _vectors(out):
    return out[..., 0] + 1j * out[..., 1]


@pytest.mark.parametrize("rep", ["eigenvectors", "eigmode", "csm"])
def test_shapes_and_output_constraints(rep):
    data = FakeData(rep=rep)
    g, d = get_builder("csm_mlp")(CFG, data, 16, False)
    z = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    out = np.asarray(g(z))
    assert out.shape == (5,) + data.sample_shape
    assert np.asarray(d(out)).shape == (5, 1)
    if rep == "csm":
        c = _vectors(out)
        np.testing.assert_allclose(c, np.conj(np.swapaxes(c, -1, -2)), atol=1e-6)
        return
    v = _vectors(out)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)     # unit-norm columns
    np.testing.assert_allclose(v[:, 7, :].imag, 0.0, atol=1e-6)                # canonical phase
    assert np.all(v[:, 7, :].real >= 0)
    if rep == "eigmode":
        s = out[..., 2]
        assert np.all(s[:, :, 0] == 0) and np.all(np.diff(s, axis=2) <= 0)
        np.testing.assert_array_equal(s, np.broadcast_to(s[:, :1, :], s.shape))   # same in every row


def test_orthonormal_option_gives_unitary_columns():
    g, _ = get_builder("csm_mlp")(CFG, FakeData(orthonormal=True), 16, False)
    v = _vectors(np.asarray(g(np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32))))
    gram = np.conj(np.swapaxes(v, -1, -2)) @ v
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(8), gram.shape), atol=1e-4)
    np.testing.assert_allclose(v[:, 7, :].imag, 0.0, atol=1e-6)


def test_seed_default_sizes_from_yaml_and_gradients_flow():
    import tensorflow as tf
    from omegaconf import OmegaConf

    from gan_cli.data.csm_cli import dataset_yaml

    cfg = OmegaConf.load(dataset_yaml().parent.parent / "model" / "csm_mlp.yaml")
    assert cfg.name == "csm_mlp"
    g, d = get_builder("csm_mlp")(cfg, FakeData(m=16, ref=15), 128, False)
    dense = [l.units for l in g.layers if isinstance(l, keras.layers.Dense)]
    assert dense == [512, 1024, 16 * 16 * 2]
    # 16 mics: a 4 x 4 last feature map, too small for the fused layer to pay -> the plain Keras convs
    assert [(type(l).__name__, l.filters) for l in d.layers if hasattr(l, "filters")] == [("Conv2D", 64), ("Conv2D", 128)]
    # 64 mics (16 x 16): both convs (+ LeakyReLUs + max pool) are the fused ConvLeakyMaxPool layer
    _, d64 = get_builder("csm_mlp")(cfg, FakeData(m=64, ref=0), 128, False)
    fused = [l for l in d64.layers if hasattr(l, "filters")]
    assert [(type(l).__name__, l.first_filters, l.filters) for l in fused] == [("ConvLeakyMaxPool", 64, 128)]
    # same weights in the same order as the plain critic: checkpoints of either load into the other
    assert [tuple(w.shape) for w in d64.weights] == [tuple(w.shape) for w in d.weights] == [
        (3, 3, 2, 64), (64,), (3, 3, 64, 128), (128,), (128, 1), (1,)]
    z = tf.random.normal((4, 128))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(d(g(z)))
    grads = tape.gradient(loss, g.trainable_variables)
    assert all(gr is not None and np.isfinite(gr.numpy()).all() for gr in grads)


def test_conditional_needs_several_lines_and_layer_serialises():
    with pytest.raises(ConfigError, match="several frequency lines"):
        get_builder("csm_mlp")(CFG, FakeData(), 16, True)
    layer = CsmOutputTransform(representation="eigmode", reference_mic=3, orthonormal=True)
    clone = CsmOutputTransform.from_config(layer.get_config())
    assert (clone.representation, clone.reference_mic, clone.orthonormal) == ("eigmode", 3, True)
    g, _ = get_builder("csm_mlp")(CFG, FakeData(), 16, False)
    again = keras.Model.from_config(g.get_config())
    assert again.output_shape == g.output_shape


def test_conditional_model_takes_the_line_label():
    """Several frequency lines: G([z, label]) and D([x, label]); the label changes both outputs."""
    data = FakeData()
    data.num_classes = 3
    g, d = get_builder("csm_mlp")(CFG, data, 16, True)
    z = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    y0, y2 = np.zeros(4, np.int32), np.full(4, 2, np.int32)
    x0, x2 = np.asarray(g([z, y0])), np.asarray(g([z, y2]))
    assert x0.shape == (4, 8, 8, 2) and not np.allclose(x0, x2)
    norms = np.sqrt((x0[..., 0] ** 2 + x0[..., 1] ** 2).sum(axis=1))      # the output transform still applies
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    assert np.asarray(d([x0, y0])).shape == (4, 1)
    assert not np.allclose(np.asarray(d([x0, y0])), np.asarray(d([x0, y2])))
