"""CsmDataset: built-in cached set, user files in three formats, representations, evaluator, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gan_cli.metrics import evaluator_for
from gan_cli.data.csm import CsmDataset, channel_to_eig, eig_to_channel
from gan_cli.data.csm_io import csm_to_csmtriu, read_csm_file
from gan_cli.core.errors import ConfigError, DataError

SMALL = dict(array="minidsp_uma-16", num_samples=96, seed=1, representation="eigenvectors")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_CLI_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_default_set_is_built_once_into_the_cache(cache):
    ds = CsmDataset(**SMALL)
    assert ds.sample_shape == (16, 16, 2)
    x, y = ds.arrays()
    assert y is None and x.shape == (96, 16, 16, 2) and x.dtype == np.float32
    files = list(cache.glob("csm_default_*.h5"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    mtime = files[0].stat().st_mtime_ns
    x2, _ = CsmDataset(**SMALL).arrays()
    np.testing.assert_array_equal(x, x2)
    assert files[0].stat().st_mtime_ns == mtime
    CsmDataset(**{**SMALL, "seed": 2}).arrays()
    assert len(list(cache.glob("csm_default_*.h5"))) == 2
    # eigenvectors: unit norm, canonical phase at the reference mic (15)
    v = x[..., 0] + 1j * x[..., 1]
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert np.all(x[:, 15, :, 1] == 0) and np.all(x[:, 15, :, 0] >= 0)


def test_representations_reconstruct_the_normalised_csm(cache):
    ref_file = CsmDataset(**SMALL)._ensure_file()
    c = read_csm_file(ref_file).csm
    cn = c / c[:, 15, 15].real[:, None, None]
    for rep, ch in (("eigmode", 3), ("csm", 2)):
        ds = CsmDataset(**dict(SMALL, representation=rep))
        x, _ = ds.arrays()
        assert x.shape == (96, 16, 16, ch)
        back = ds.to_user_space(x)
        assert back.dtype == np.complex64
        np.testing.assert_allclose(back, cn, atol=2e-4 * np.abs(cn).max())
    ds = CsmDataset(**dict(SMALL, representation="eigmode"))
    s = ds.arrays()[0][..., 2]
    assert np.all(s[:, :, 0] == 0) and np.all(np.diff(s[:, 0, :], axis=1) <= 0) and s.min() >= -1.2
    # eigenvectors representation: mean spectrum, C[ref, ref] ~ 1 on average
    ds = CsmDataset(**SMALL)
    back = ds.to_user_space(ds.arrays()[0])
    assert abs(back[:, 15, 15].real.mean() - 1) < 0.2


def test_eigmode_encoding_round_trip():
    rng = np.random.default_rng(0)
    lam = np.sort(rng.uniform(0.001, 3, (4, 6)), axis=1)[:, ::-1]
    s = eig_to_channel(lam)
    assert np.all(s[:, 0] == 0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 6, 6)) + 1j * rng.standard_normal((4, 6, 6)))
    lam_n = lam / (lam * np.abs(q[:, 2, :]) ** 2).sum(1, keepdims=True)    # C[2, 2] = 1
    np.testing.assert_allclose(channel_to_eig(eig_to_channel(lam_n), q, 2), lam_n, rtol=1e-4)


def test_reads_user_files_in_all_three_formats(tmp_path, cache):
    import h5py
    import tensorflow as tf

    src = CsmDataset(**SMALL)
    c = read_csm_file(src._ensure_file()).csm[:20]
    # AcouPipe HDF5: groups with csmtriu (F=1, M, M)
    ap = tmp_path / "acoupipe.h5"
    with h5py.File(ap, "w") as f:
        for i, ci in enumerate(c):
            f.create_group(str(i))["csmtriu"] = csm_to_csmtriu(ci)[None]
    # AcouPipe TFRecord: csmtriu (M, M, 1)
    tfr = tmp_path / "acoupipe.tfrecord"
    with tf.io.TFRecordWriter(str(tfr)) as w:
        for t in csm_to_csmtriu(c):
            feat = {"csmtriu": tf.train.Feature(float_list=tf.train.FloatList(value=t.reshape(-1)))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    ref = src.arrays()[0][:20]
    for path in (src._ensure_file(), ap, tfr):
        ds = CsmDataset(path=str(path), array="minidsp_uma-16", max_samples=20, representation="eigenvectors")
        x, _ = ds.arrays()
        assert x.shape == (20, 16, 16, 2)
        # same canonical eigenvectors (compare the well-separated leading ones up to rounding)
        np.testing.assert_allclose(np.abs(x[:, :, 0, 0] - ref[:, :, 0, 0]).max(), 0, atol=2e-3)
        assert ds.mic_positions is not None and ds.frequency == pytest.approx(4.0625 * 343)
    with pytest.raises(DataError, match="does not exist"):
        CsmDataset(path=str(tmp_path / "nope.h5")).arrays()


def test_write_samples_h5_and_npy(tmp_path, cache):
    ds = CsmDataset(**SMALL)
    x = ds.arrays()[0][:8]
    ds.write_samples(x, None, tmp_path / "gen.h5")
    d = read_csm_file(tmp_path / "gen.h5")
    assert d.csm.shape == (8, 16, 16) and d.mic_positions.shape == (16, 3)
    assert d.attrs["frequency"] == pytest.approx(ds.frequency) and d.attrs["reference_mic"] == 15
    ds.write_samples(x, None, tmp_path / "gen.npy")
    arr = np.load(tmp_path / "gen.npy")
    assert arr.dtype == np.complex64 and arr.shape == (8, 16, 16)
    from gan_cli.core.errors import UserError

    with pytest.raises(UserError, match=r"\.h5 or \.npy"):
        ds.write_samples(x, None, tmp_path / "gen.png")


@pytest.mark.parametrize("rep", ["eigenvectors", "eigmode", "csm"])
def test_evaluator_real_beats_noise(rep, cache):
    ds = CsmDataset(**dict(SMALL, representation=rep), eval_samples=32, eval_grid=11)
    ev = evaluator_for(ds, 64, seed=0)
    real = ev(ds.real_samples(64, seed=1)[0], None)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((64,) + ds.sample_shape).astype(np.float32)
    if rep != "csm":   # noise with valid structure: unit columns, descending eigenvalue channel
        v = noise[..., 0] + 1j * noise[..., 1]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        noise[..., 0], noise[..., 1] = v.real, v.imag
    if rep == "eigmode":
        noise[..., 2] = -np.cumsum(np.abs(noise[:, :1, :, 2]), axis=-1) * 0.02
    fake = ev(noise, None)
    keys = {"psd_rate", "c2st", "spectrum_db", "source_count_dist", "peak_w1", "peak_level_dist"}
    keys |= {f"{k}_floor" for k in keys - {"psd_rate"}}
    if rep != "csm":
        keys.add("orthonormality_error")
    assert set(real) == keys == set(fake)
    assert all(np.isfinite(v) for v in list(real.values()) + list(fake.values()))
    assert real["psd_rate"] == 1.0 and real["spectrum_db"] < fake["spectrum_db"]
    assert real["peak_level_dist"] < fake["peak_level_dist"]
    if rep != "csm":
        assert real["orthonormality_error"] < 1e-4 < fake["orthonormality_error"]
    else:
        assert fake["psd_rate"] < 0.5
    assert ds.primary_metric in real


def test_constructor_rejects_bad_values(cache):
    with pytest.raises(ConfigError, match="representation"):
        CsmDataset(representation="pixels")
    with pytest.raises(ConfigError, match="num_samples"):
        CsmDataset(num_samples=0)


def test_hydra_instantiates_the_packaged_yaml(cache):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gan_cli.data.csm_cli import dataset_yaml

    base = OmegaConf.load(dataset_yaml())
    base.pop("defaults")   # Hydra's defaults list (the recommended model), not a constructor key
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(["array=minidsp_uma-16", "num_samples=32"]))
    ds = instantiate(cfg, _convert_="all")
    assert isinstance(ds, CsmDataset) and ds.name == "csm" and ds.kind == "csm"
    assert ds.sample_shape == (16, 16, 2) and ds.default_model == "csm_physics" and ds.default_latent_dim == 128


def test_data_command(tmp_path, capsys):
    from gan_cli.data.csm_cli import generate_command

    out = tmp_path / "d.h5"
    rc = generate_command(str(out), False, ["dataset.array=minidsp_uma-16", "num_samples=10", "mode=analytic", "seed=5"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    d = read_csm_file(out)
    assert d.csm.shape == (10, 16, 16) and d.attrs["mode"] == "analytic" and d.attrs["seed"] == 5
    with pytest.raises(DataError, match="--force"):
        generate_command(str(out), False, ["array=minidsp_uma-16", "num_samples=10"])
    assert generate_command(str(out), True, ["array=minidsp_uma-16", "num_samples=12"]) == 0
    assert read_csm_file(out).csm.shape[0] == 12
    with pytest.raises(ConfigError, match="valid keys: .*num_samples"):
        generate_command(str(tmp_path / "e.h5"), False, ["dataset.bogus=1"])
    with pytest.raises(ConfigError, match="snapshots"):
        generate_command(str(tmp_path / "e.h5"), False, ["snapshots=0"])
    with pytest.raises(ConfigError, match="integer"):
        generate_command(str(tmp_path / "e.h5"), False, ["num_samples=abc"])
    with pytest.raises(ConfigError, match="unknown microphone array"):
        generate_command(str(tmp_path / "e.h5"), False, ["array=nope"])
    assert not Path(tmp_path / "e.h5").exists()


def test_csm_yaml_states_the_constructors_defaults():
    """conf/dataset/csm.yaml and CsmDataset (whose simulation defaults are SimParams') agree on every key,
    so the data a Python caller gets with defaults is the data `gan train dataset=csm` gets."""
    import inspect

    from omegaconf import OmegaConf

    from gan_cli.data.csm import CsmDataset
    from gan_cli.data.csm_cli import SIM_KEYS, dataset_yaml

    yaml = OmegaConf.to_container(OmegaConf.load(dataset_yaml()))
    params = inspect.signature(CsmDataset.__init__).parameters
    keys = [k for k in yaml if k not in ("defaults", "_target_")]
    assert sorted(keys) == sorted(p for p in params if p != "self")
    assert {k: yaml[k] for k in keys} == {k: params[k].default for k in keys}
    assert set(SIM_KEYS) <= set(keys)
