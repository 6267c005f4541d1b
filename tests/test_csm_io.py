"""CSM conversions and the three input formats (gan-cli HDF5, AcouPipe HDF5, AcouPipe TFRecord)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gan_cli.data.csm_io import (canonical_eig, csm_to_csmtriu, csmtriu_to_csm, read_csm_file,
                                 write_csm_h5)
from gan_cli.core.errors import DataError


def random_csm(n: int, m: int, seed: int = 0, rank: int | None = None) -> np.ndarray:
    """Random Hermitian PSD matrices (n, m, m) complex128."""
    rng = np.random.default_rng(seed)
    r = rank or m
    a = rng.standard_normal((n, m, r)) + 1j * rng.standard_normal((n, m, r))
    return a @ np.conj(np.swapaxes(a, -1, -2)) / r


def test_csmtriu_layout_and_round_trip():
    c = random_csm(5, 7)
    t = csm_to_csmtriu(c)
    assert t.dtype == np.float32 and t.shape == (5, 7, 7)
    i, j = 1, 4
    assert t[0, i, j] == pytest.approx(c[0, i, j].real, rel=1e-6)     # Re in the upper triangle
    assert t[0, j, i] == pytest.approx(c[0, i, j].imag, rel=1e-6)     # Im(C[i,j]) at [j, i]
    assert t[0, 3, 3] == pytest.approx(c[0, 3, 3].real, rel=1e-6)
    back = csmtriu_to_csm(t)
    np.testing.assert_allclose(back, c, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(back, np.conj(np.swapaxes(back, -1, -2)))


def test_canonical_eig_phase_order_and_reconstruction():
    ref = 5
    c = random_csm(6, 8, seed=1, rank=3) + 0.01 * np.eye(8)
    w, v = canonical_eig(c, ref)
    assert np.all(np.diff(w, axis=1) <= 1e-12)                      # descending
    np.testing.assert_array_equal(v[:, ref, :].imag, 0.0)          # reference entries real
    assert np.all(v[:, ref, :].real >= 0)                          # and non-negative
    rec = (v * w[:, None, :]) @ np.conj(np.swapaxes(v, -1, -2))
    np.testing.assert_allclose(rec, c, atol=1e-10)
    # a random phase per column of the input basis does not change the canonical form
    rng = np.random.default_rng(2)
    u = np.exp(1j * rng.uniform(0, 2 * np.pi, 8))
    w2, v2 = canonical_eig((v * u) * w[:, None, :] @ np.conj(np.swapaxes(v * u, -1, -2)), ref)
    np.testing.assert_allclose(np.abs(np.einsum("nmj,nmj->nj", np.conj(v2[:, :, :3]), v[:, :, :3])), 1, atol=1e-8)
    np.testing.assert_allclose(v2[:, :, :3], v[:, :, :3], atol=1e-8)  # distinct eigenvalues: identical vectors


def test_project_layout_round_trip_atomic_and_no_overwrite(tmp_path):
    c = random_csm(10, 6, seed=3)
    loc = np.full((10, 2, 3), np.nan)
    loc[:, 0] = [0.1, -0.2, 0.5]
    path = tmp_path / "set.h5"
    write_csm_h5(path, c, reference_mic=5, loc=loc, num_sources=np.ones(10, int), strength=np.ones((10, 2)),
                 mic_positions=np.zeros((6, 3)), attrs={"frequency": 1000.0, "c": 343.0, "mode": "analytic", "x": None})
    assert path.exists() and not (tmp_path / "set.h5.tmp").exists()
    with h5py.File(path) as f:
        assert f["csm"].dtype == np.complex64 and f["csmtriu"].dtype == np.float32
        assert f["eigenvalues"].shape == (10, 6) and f["eigenvectors"].shape == (10, 6, 6)
        assert f["csm"].chunks is not None
    d = read_csm_file(path)
    assert d.source_format == "gan-cli"
    np.testing.assert_allclose(d.csm, c, rtol=1e-5, atol=1e-5)
    assert d.attrs["frequency"] == 1000.0 and d.attrs["reference_mic"] == 5 and d.attrs["x"] is None
    np.testing.assert_allclose(d.loc[:, 0], loc[:, 0], rtol=1e-6)
    assert np.isnan(d.loc[:, 1]).all()
    assert np.all(d.eigenvectors[:, 5, :].imag == 0)
    with pytest.raises(DataError, match="already exists"):
        write_csm_h5(path, c, reference_mic=5)
    write_csm_h5(path, c[:3], reference_mic=5, force=True)
    assert read_csm_file(path).csm.shape == (3, 6, 6)


def write_acoupipe_h5(path, csms_f, locs):
    """AcouPipe layout: one group per sample with csmtriu (F, M, M), loc (3, J), strengths."""
    with h5py.File(path, "w") as f:
        for i, (cf, loc) in enumerate(zip(csms_f, locs)):
            g = f.create_group(str(i))
            g["csmtriu"] = csm_to_csmtriu(cf)
            g["loc"] = loc
            g["source_strength_analytic"] = np.ones((cf.shape[0], loc.shape[1]))


def test_read_acoupipe_h5_selects_frequency(tmp_path):
    csms = random_csm(3 * 2, 5, seed=4).reshape(3, 2, 5, 5)   # 3 samples, F = 2
    locs = [np.array([[0.1, 0.2], [0.0, -0.1], [0.5, 0.5]]), np.array([[0.3], [0.1], [0.5]]), np.array([[0.0], [0.0], [0.5]])]
    path = tmp_path / "acoupipe.h5"
    write_acoupipe_h5(path, csms, locs)
    d = read_csm_file(path, freq_index=1)
    assert d.source_format == "acoupipe-h5"
    np.testing.assert_allclose(d.csm, csms[:, 1], rtol=1e-5, atol=1e-5)
    assert d.loc.shape == (3, 2, 3) and list(d.num_sources) == [2, 1, 1]
    np.testing.assert_allclose(d.loc[0, 1], [0.2, -0.1, 0.5])
    with pytest.raises(DataError, match="freq_index=2"):
        read_csm_file(path, freq_index=2)


def write_tfrecord(path, csmtriu_list):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for t in csmtriu_list:
            feat = {"csmtriu": tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(t).reshape(-1)))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())


def test_read_acoupipe_tfrecord(tmp_path):
    c = random_csm(4, 8, seed=5)
    path = tmp_path / "train.tfrecord"
    write_tfrecord(path, [t[..., None] for t in csm_to_csmtriu(c)])   # (M, M, 1) as in the seed
    d = read_csm_file(path)
    assert d.source_format == "acoupipe-tfrecord"
    np.testing.assert_allclose(d.csm, c, rtol=1e-5, atol=1e-5)
    # flat (F, M, M) features resolve with the array's mic count; content detection ignores the suffix
    other = tmp_path / "noext"
    write_tfrecord(other, [np.stack([t, 2 * t]) for t in csm_to_csmtriu(c)])
    d2 = read_csm_file(other, freq_index=1, num_mics_hint=8)
    np.testing.assert_allclose(d2.csm, 2 * c, rtol=1e-5, atol=1e-5)


def _truncated(tmp_path):
    good = tmp_path / "good.h5"
    write_csm_h5(good, random_csm(64, 8), reference_mic=7)
    data = good.read_bytes()
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(data[: len(data) // 3])
    return bad


def _wrong_shape(tmp_path):
    p = tmp_path / "shape.h5"
    with h5py.File(p, "w") as f:
        f["csm"] = np.zeros((3, 4, 5), np.complex64)
    return p


def _no_data(tmp_path):
    p = tmp_path / "nodata.h5"
    with h5py.File(p, "w") as f:
        f["something"] = np.zeros(3)
    return p


def _empty(tmp_path):
    p = tmp_path / "empty.h5"
    p.write_bytes(b"")
    return p


def _garbage(tmp_path):
    p = tmp_path / "garbage.h5"
    p.write_bytes(b"this is not a data file at all" * 10)
    return p


def _zero_samples(tmp_path):
    p = tmp_path / "zero.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("csmtriu", (0, 4, 4), np.float32)
    return p


def _tfrecord_missing_feature(tmp_path):
    import tensorflow as tf

    p = tmp_path / "x.tfrecord"
    with tf.io.TFRecordWriter(str(p)) as w:
        feat = {"other": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}
        w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    return p


@pytest.mark.parametrize("make, pattern", [
    (lambda t: t / "missing.h5", "does not exist"),
    (_empty, "empty or truncated"),
    (_truncated, "truncated or corrupt"),
    (_wrong_shape, r"shape \(3, 4, 5\)"),
    (_no_data, "holds no CSM data"),
    (_garbage, "neither HDF5 nor TFRecord"),
    (_zero_samples, "0 samples"),
    (_tfrecord_missing_feature, "no 'csmtriu' feature"),
])
def test_bad_files_raise_one_line_data_error(tmp_path, make, pattern):
    path = make(tmp_path)
    with pytest.raises(DataError, match=pattern) as exc:
        read_csm_file(path)
    assert "\n" not in str(exc.value) and str(path.name) in str(exc.value)
