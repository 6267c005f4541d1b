"""CsmDataset streaming: files over dataset.max_in_memory_mb are read in chunks, never whole."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from conftest import compose
from gan_cli.metrics import evaluator_for
from gan_cli.data import csm_io
from gan_cli.data.csm import CsmDataset
from gan_cli.data.csm_io import CsmReader, csm_file_info, csm_to_csmtriu, read_csm_file
from gan_cli.core.errors import ConfigError, DataError

N = 300
TINY_MB = 0.01      # 300 * 16*16*2 * 4 B = 0.6 MiB in model space: far over the limit


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 300-sample project-layout file, a 120-sample AcouPipe copy, and their in-memory encodings."""
    from gan_cli.data.csm_sim import CsmSimulator, SimParams

    root = tmp_path_factory.mktemp("csm_stream")
    h5 = CsmSimulator(SimParams(array="minidsp_uma-16", num_samples=N, mode="analytic", seed=3)).write(
        root / "sim.h5", progress=False)
    ap = root / "acoupipe.h5"
    with h5py.File(ap, "w") as f:
        for i, c in enumerate(read_csm_file(h5, limit=120).csm):
            f.create_group(str(i))["csmtriu"] = csm_to_csmtriu(c)[None]
    ref = {}
    for key, path, rep in (("h5", h5, "eigenvectors"), ("h5_eigmode", h5, "eigmode"), ("ap", ap, "eigenvectors")):
        ds = CsmDataset(path=str(path), array="minidsp_uma-16", representation=rep)
        ref[key] = ds
        assert not ds.streaming and ds.arrays()[0].shape[0] == (N if path == h5 else 120)
    return {"h5": h5, "ap": ap, "ref": ref}


@pytest.fixture
def no_full_load(monkeypatch):
    """Fail loudly if anything reads the whole file (the in-memory loader or read_csm_file)."""
    def boom(*args, **kwargs):
        raise AssertionError("the whole file was read in streaming mode")

    monkeypatch.setattr(CsmDataset, "_load_memory", boom)
    monkeypatch.setattr(csm_io, "read_csm_file", boom)


def streamed(path, **kw) -> CsmDataset:
    kw.setdefault("representation", "eigenvectors")
    ds = CsmDataset(path=str(path), array="minidsp_uma-16", max_in_memory_mb=TINY_MB, **kw)
    ds.stream_chunk = 64            # several chunks even in a 300-sample file
    return ds


def take(ds, n, **kw) -> np.ndarray:
    it = iter(ds.tf_dataset(**kw))
    return np.stack([next(it).numpy() for _ in range(n)])


def match_rows(samples: np.ndarray, ref: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """Index of the reference row each sample equals (assert it exists)."""
    flat_s, flat_r = samples.reshape(len(samples), -1), ref.reshape(len(ref), -1)
    idx = np.empty(len(samples), int)
    for i, s in enumerate(flat_s):
        err = np.abs(flat_r - s).max(axis=1)
        idx[i] = int(err.argmin())
        assert err[idx[i]] <= atol, f"sample {i} is no row of the file (closest differs by {err[idx[i]]:.3g})"
    return idx


def test_file_info_and_reader_read_only_what_is_asked(files):
    info = csm_file_info(files["h5"], limit=250)
    assert (info.num_samples, info.num_mics, info.source_format, info.exact) == (250, 16, "gan-cli", True)
    assert csm_file_info(files["ap"]).num_samples == 120
    full = read_csm_file(files["h5"])
    rows = np.array([0, 7, 63, 64, 119, 299])
    for path in (files["h5"], files["ap"]):
        whole = read_csm_file(path).csm
        with CsmReader(path) as rd:
            r = rows[rows < rd.num_samples]
            np.testing.assert_array_equal(rd.read(r).csm, whole[r])
            np.testing.assert_array_equal(rd.read(slice(60, 70)).csm, whole[60:70])
    with CsmReader(files["h5"]) as rd:
        np.testing.assert_array_equal(rd.read(rows).eigenvectors, full.eigenvectors[rows])
        with pytest.raises(ValueError, match="sorted"):
            rd.read(np.array([5, 3]))


@pytest.mark.parametrize("key", ["h5", "h5_eigmode"])
def test_streamed_batches_are_encoded_rows_of_the_file(files, no_full_load, key):
    rep = "eigmode" if key.endswith("eigmode") else "eigenvectors"
    ds = streamed(files["h5"], representation=rep)
    assert ds.sample_shape == (16, 16, 3 if rep == "eigmode" else 2)
    assert ds.streaming and ds.num_samples == N
    with pytest.raises(DataError, match="max_in_memory_mb"):
        ds.arrays()
    x = take(ds, 25, batch_size=8, seed=0, batches_per_step=2)          # 400 samples > one pass
    assert x.shape == (25, 8, 2, *ds.sample_shape) and x.dtype == np.float32   # (step, batch, batch of the step, ...)
    ref = files["ref"][key]
    idx = match_rows(x.reshape(-1, *ds.sample_shape), ref.arrays()[0])   # bit-exact: same encoding code
    assert len(np.unique(idx)) > 150                                     # shuffled over the whole file
    assert not np.all(np.diff(idx[:64]) == 1)                            # not in file order
    np.testing.assert_allclose(ds.mean_spectrum, ref.mean_spectrum, rtol=1e-6)   # stats over <= 10k samples = all here
    assert ds.reference_mic == ref.reference_mic == 15 and ds.frequency == pytest.approx(ref.frequency)
    np.testing.assert_array_equal(ds.mic_positions, ref.mic_positions)


def test_acoupipe_layout_streams(files, no_full_load):
    ds = streamed(files["ap"])
    assert ds.streaming and ds.num_samples == 120 and ds.mic_positions is not None
    x = take(ds, 10, batch_size=16, seed=4)
    assert x.shape == (10, 16, 1, 16, 16, 2)
    match_rows(x.reshape(-1, 16, 16, 2), files["ref"]["ap"].arrays()[0], atol=1e-6)


def test_stream_is_deterministic_per_seed(files, no_full_load):
    ds = streamed(files["h5"])
    a = take(ds, 12, batch_size=8, seed=0)
    assert ds.tf_dataset(batch_size=8, seed=0).options().autotune.enabled is False  # data.base.fixed_pipeline
    np.testing.assert_array_equal(a, take(streamed(files["h5"]), 12, batch_size=8, seed=0))
    assert not np.array_equal(a, take(ds, 12, batch_size=8, seed=1))
    assert not np.array_equal(a, take(ds, 12, batch_size=8, seed=0, start_step=5))   # resume: fresh data
    capped = streamed(files["h5"], max_samples=100)                  # dataset.max_samples bounds the stream
    assert capped.streaming and capped.num_samples == 100
    idx = match_rows(take(capped, 10, batch_size=16, seed=0).reshape(-1, 16, 16, 2), files["ref"]["h5"].arrays()[0])
    assert idx.max() < 100 and len(np.unique(idx)) > 50


def test_real_samples_evaluator_and_decoders_without_the_whole_file(files, no_full_load, tmp_path):
    ds = streamed(files["h5"], eval_samples=16, eval_grid=7)
    ref = files["ref"]["h5"]
    real = ds.real_samples(40, seed=1)[0]
    np.testing.assert_array_equal(real, ref.real_samples(40, seed=1)[0])      # same draw as in memory
    assert ds.real_samples(N + 5, seed=2)[0].shape == (N + 5, 16, 16, 2)       # with replacement
    ev = evaluator_for(ds, 32, seed=0)
    metrics = ev(ds.real_samples(32, seed=2)[0], None)
    assert {"psd_rate", "c2st", "spectrum_db", "peak_w1", "c2st_floor"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    np.testing.assert_allclose(ds.to_user_space(real[:4]), ref.to_user_space(real[:4]), rtol=1e-5, atol=1e-6)
    from gan_cli.models.output import output_transform

    assert output_transform(ds) is not None
    ds.write_samples(real[:4], None, tmp_path / "gen.h5")
    with CsmReader(tmp_path / "gen.h5") as rd:
        assert rd.num_samples == 4 and rd.num_mics == 16


def test_threshold_config_and_tfrecord(files, tmp_path):
    import tensorflow as tf

    default = CsmDataset(path=str(files["h5"]), array="minidsp_uma-16")
    assert default.max_in_memory_mb == 2048 and default.arrays()[0].shape[0] == N and not default.streaming
    big = CsmDataset(path=str(files["h5"]), array="minidsp_uma-16", max_in_memory_mb=1.0)
    big.arrays()
    assert not big.streaming                                     # 0.6 MiB fits in 1 MiB
    assert CsmDataset(path=str(files["h5"]), array="minidsp_uma-16", max_in_memory_mb=None).arrays()[0].shape[0] == N
    small = CsmDataset(path=str(files["h5"]), array="minidsp_uma-16", max_in_memory_mb=0.5, max_samples=50)
    small.arrays()
    assert not small.streaming                                   # max_samples counts
    with pytest.raises(ConfigError, match="max_in_memory_mb"):
        CsmDataset(max_in_memory_mb=0)
    tfr = tmp_path / "a.tfrecord"
    with tf.io.TFRecordWriter(str(tfr)) as w:
        for t in csm_to_csmtriu(read_csm_file(files["h5"], limit=20).csm):
            feat = {"csmtriu": tf.train.Feature(float_list=tf.train.FloatList(value=t.reshape(-1)))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    info = csm_file_info(tfr, num_mics_hint=16)
    assert info.num_samples == 20 and info.num_mics == 16 and not info.exact
    assert CsmDataset(path=str(tfr), array="minidsp_uma-16").arrays()[0].shape == (20, 16, 16, 2)
    with pytest.raises(DataError, match="convert it to HDF5"):
        CsmDataset(path=str(tfr), array="minidsp_uma-16", max_in_memory_mb=TINY_MB).arrays()


def test_training_streams_a_file(files, no_full_load, tmp_path):
    from gan_cli.job.train import train

    cfg = compose(["dataset=csm", f"dataset.path={files['h5']}", f"dataset.max_in_memory_mb={TINY_MB}",
                   "dataset.array=minidsp_uma-16", "model=csm_mlp", "model.generator.hidden=[32,32]",
                   "model.discriminator.filters=[8,16]", "train.steps=4", "train.eval_every=4",
                   "train.checkpoint_every=4", "train.batch_size=8", "metrics.num_samples=16",
                   "train.progress=false", "dataset.eval_samples=10", "dataset.eval_grid=7"])
    result = train(cfg, tmp_path)
    assert result["step"] == 4
    for key in ("d_loss", "g_loss", "spectrum_db"):
        assert math.isfinite(result[key]), key
    assert (tmp_path / "metrics.jsonl").exists() and list((tmp_path / "checkpoints").glob("*"))
