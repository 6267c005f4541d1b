"""Real AcouPipe files (../shared/data/acoupipe, written by AcouPipe's own code): every file reads to the
right CSMs at the right frequency or is refused; geometry, frequency and multi-line training checks."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from gan_cli.metrics import evaluator_for
from gan_cli.data.csm_io import csm_to_csmtriu, read_csm_file, write_csm_h5
from gan_cli.core.errors import ConfigError, DataError

ACOUPIPE = Path(__file__).resolve().parents[2] / "shared" / "data" / "acoupipe"
FILES = {  # file -> (samples, mics, line frequencies stored in `f`)
    "vogel64_wishart_f4_n8": (8, 64, [1071.875, 2036.5625, 3001.25, 4073.125]),
    "uma16_wishart_f1_n20": (20, 16, [4073.125]),
}
ARRAY = {64: {"array": "tub_vogel64"}, 16: {"array": "minidsp_uma-16", "aperture": None}}

needs_files = pytest.mark.skipif(not ACOUPIPE.is_dir(), reason="shared AcouPipe fixtures not present")


def rebuild(triu: np.ndarray) -> np.ndarray:
    """Independent csmtriu -> CSM, element by element: Re C[i, j] = T[i, j] (i <= j), Im C[i, j] = T[j, i] (i < j)."""
    m = triu.shape[-1]
    c = np.zeros((m, m), np.complex128)
    for i in range(m):
        for j in range(m):
            if i == j:
                c[i, j] = triu[i, i]
            elif i < j:
                c[i, j] = triu[i, j] + 1j * triu[j, i]
            else:
                c[i, j] = triu[j, i] - 1j * triu[i, j]
    return c


def raw_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, F, M, M) csmtriu and (F,) f straight from the AcouPipe groups, in sample order."""
    with h5py.File(path) as f:
        groups = sorted(f.keys(), key=int)
        return np.stack([f[g]["csmtriu"][()] for g in groups]), f[groups[0]]["f"][()]


def raw_tfrecord(path: Path, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, F, M, M) csmtriu and (F,) f from the records; F from `f`'s length, M given."""
    import tensorflow as tf

    triu, freqs = [], None
    for raw in tf.data.TFRecordDataset(str(path)):
        ex = tf.train.Example()
        ex.ParseFromString(raw.numpy())
        freqs = np.asarray(ex.features.feature["f"].float_list.value, np.float64)
        triu.append(np.asarray(ex.features.feature["csmtriu"].float_list.value, np.float64).reshape(len(freqs), m, m))
    return np.stack(triu), freqs


@needs_files
@pytest.mark.parametrize("stem", list(FILES))
@pytest.mark.parametrize("suffix", [".h5", ".tfrecord"])
def test_every_shared_file_reads_to_the_independently_rebuilt_csms(stem, suffix):
    n, m, freqs = FILES[stem]
    path = ACOUPIPE / f"{stem}{suffix}"
    triu, f = raw_h5(path) if suffix == ".h5" else raw_tfrecord(path, m)
    assert triu.shape == (n, len(freqs), m, m)
    np.testing.assert_allclose(f, freqs)
    expected = np.array([[rebuild(t) for t in sample] for sample in triu])      # (N, F, M, M)
    for k in range(len(freqs)):
        d = read_csm_file(path, freq_index=k)                  # no hint: F comes from `f`
        assert d.csm.shape == (n, m, m) and d.labels is None
        np.testing.assert_allclose(d.csm, expected[:, k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(d.frequencies, [freqs[k]])
        assert np.linalg.eigvalsh(d.csm).min() > 0               # Wishart estimates with B > M: PSD
    d = read_csm_file(path, freq_index="all")
    assert d.csm.shape == (n * len(freqs), m, m)
    np.testing.assert_array_equal(d.labels, np.tile(np.arange(len(freqs)), n))
    np.testing.assert_allclose(d.csm, expected.reshape(-1, m, m), rtol=1e-12, atol=1e-12)
    with pytest.raises(DataError, match=f"freq_index={len(freqs)} is out of range for the file's {len(freqs)} frequency"):
        read_csm_file(path, freq_index=len(freqs))


@needs_files
def test_h5_and_tfrecord_of_one_set_agree():
    a = read_csm_file(ACOUPIPE / "vogel64_wishart_f4_n8.h5", freq_index="all")
    b = read_csm_file(ACOUPIPE / "vogel64_wishart_f4_n8.tfrecord", freq_index="all")
    np.testing.assert_allclose(b.csm, a.csm, rtol=1e-5, atol=1e-6 * np.abs(a.csm).max())   # TFRecord: float32


def dataset(path, **kw):
    from gan_cli.data.csm import CsmDataset

    ds = CsmDataset(path=str(path), representation="eigenvectors", **kw)
    ds.prepare()
    return ds


@needs_files
@pytest.mark.parametrize("suffix", [".h5", ".tfrecord"])
def test_dataset_frequency_follows_the_line_and_the_file(suffix):
    path = ACOUPIPE / f"vogel64_wishart_f4_n8{suffix}"
    freqs = FILES["vogel64_wishart_f4_n8"][2]
    for k in (0, 3):
        ds = dataset(path, freq_index=k)
        assert ds.frequency == freqs[k] and ds.num_classes == 0 and ds.line_frequencies is None
        assert ds.frequency_source == "file" and ds.mic_positions.shape == (64, 3)
    ds = dataset(path, freq_index="all")
    x, y = ds.arrays()
    assert ds.num_classes == 4 and ds.line_frequencies == freqs and ds.frequency is None
    assert x.shape == (32, 64, 64, 2) and np.bincount(y).tolist() == [8, 8, 8, 8]
    ds = dataset(path, freq_index=[1, 3])
    assert ds.line_frequencies == [freqs[1], freqs[3]] and np.bincount(ds.arrays()[1]).tolist() == [8, 8]
    # a value that agrees with the file is accepted, one that contradicts it is refused
    assert dataset(path, freq_index=2, frequency=3001.25).frequency == 3001.25
    with pytest.raises(ConfigError, match=r"dataset.frequency=1000 .*contradicts.* stores 1071.875 Hz"):
        dataset(path, frequency=1000)
    with pytest.raises(ConfigError, match=r"dataset.helmholtz=4.0625 .*contradicts"):
        dataset(path, helmholtz=4.0625)
    assert dataset(path, freq_index=3, helmholtz=4073.125 / 343.0).frequency == 4073.125


@needs_files
@pytest.mark.parametrize("suffix", [".h5", ".tfrecord"])
def test_geometry_with_another_mic_count_is_refused(suffix):
    path = ACOUPIPE / f"uma16_wishart_f1_n20{suffix}"
    with pytest.raises(ConfigError, match=r"dataset.array=tub_vogel64 has 64 microphones but .* 16-microphone") as exc:
        dataset(path)
    assert "\n" not in str(exc.value)
    ds = dataset(path, **ARRAY[16])
    assert ds.num_mics == 16 and ds.frequency == 4073.125 and ds.mic_positions.shape == (16, 3)
    x, y = ds.arrays()
    assert x.shape == (20, 16, 16, 2) and y is None
    # all lines of a one-line file: plain (unlabelled) data
    assert dataset(path, freq_index="all", **ARRAY[16]).num_classes == 0


def write_tfrecord(path, samples, freqs=None):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for triu in samples:
            feat = {"csmtriu": tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(triu).reshape(-1)))}
            if freqs is not None:
                feat["f"] = tf.train.Feature(float_list=tf.train.FloatList(value=freqs))
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())


def random_csm(n, m, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, m, 2 * m)) + 1j * rng.standard_normal((n, m, 2 * m))
    return a @ np.conj(np.swapaxes(a, -1, -2)) / (2 * m)


def test_tfrecord_without_frequencies_is_refused_when_it_holds_several_lines(tmp_path):
    # 4 lines of 64 mics = 16384 values, also one 128 x 128 matrix: without `f` only the user can say
    c = random_csm(3 * 4, 64, seed=1).reshape(3, 4, 64, 64)
    path = tmp_path / "nof.tfrecord"
    write_tfrecord(path, csm_to_csmtriu(c))
    with pytest.raises(ConfigError, match=r"stores no frequencies .* 4 lines of 64 microphones .* dataset.frequency"):
        dataset(path)
    ds = dataset(path, freq_index="all", frequency=[500, 1000, 1500, 2000])
    assert ds.line_frequencies == [500.0, 1000.0, 1500.0, 2000.0] and ds.frequency_source == "dataset.frequency"
    with pytest.raises(DataError, match="not 2 line.* set dataset.frequency to one value per line"):
        dataset(path, frequency=[500, 1000])
    # the 16-mic array cannot split 64-mic data into whole lines
    with pytest.raises(ConfigError, match="dataset.frequency|dataset.array"):
        dataset(path, array="minidsp_uma-16", aperture=None)
    # a file with `f` needs no hint and ignores the array's mic count for its shape
    with_f = tmp_path / "f.tfrecord"
    write_tfrecord(with_f, csm_to_csmtriu(c), freqs=[500.0, 1000.0, 1500.0, 2000.0])
    d = read_csm_file(with_f, freq_index=2, num_mics_hint=16)
    np.testing.assert_allclose(d.csm, c[:, 2], rtol=1e-5, atol=1e-5)


def test_one_line_file_without_frequency_warns_and_uses_the_default_helmholtz(tmp_path, capsys):
    c = random_csm(4, 16, seed=2)
    path = tmp_path / "seed.tfrecord"
    write_tfrecord(path, [t[..., None] for t in csm_to_csmtriu(c)])        # the seed's (M, M, 1) records
    ds = dataset(path, **ARRAY[16])
    assert ds.frequency == pytest.approx(4.0625 * 343.0 / ds.aperture) and ds.frequency_source == "default dataset.helmholtz"
    assert "stores no frequency" in capsys.readouterr().err
    assert dataset(path, frequency=2000, **ARRAY[16]).frequency == 2000.0


def test_microphone_positions_from_files_and_inline_lists(tmp_path):
    from gan_cli.data.csm_sim import load_mic_positions

    ref = load_mic_positions("minidsp_uma-16", None)
    np.save(tmp_path / "a.npy", ref)
    np.savetxt(tmp_path / "a.csv", ref, delimiter=",")
    np.savetxt(tmp_path / "a.txt", ref[:, :2])                              # M x 2: z = 0
    for name in ("a.npy", "a.csv"):
        np.testing.assert_allclose(load_mic_positions(str(tmp_path / name), None), ref)
    got = load_mic_positions(str(tmp_path / "a.txt"), None)
    assert got.shape == (16, 3) and np.all(got[:, 2] == 0)
    np.testing.assert_allclose(got[:, :2], ref[:, :2])
    inline = load_mic_positions([[0, 0, 0], [0.2, 0, 0], [0, 0.1, 0]], 1.0)   # rescaled to a 1 m aperture
    np.testing.assert_allclose(inline[1], [0.2 / np.sqrt(0.05), 0, 0])
    for bad in ([[0, 0, 0]], [[0, 0, 0, 0], [1, 1, 1, 1]], str(tmp_path / "missing.csv")):
        with pytest.raises(ConfigError):
            load_mic_positions(bad, None)
    # a positions file is a geometry for AcouPipe data like an acoular name
    c = random_csm(3, 16, seed=4)
    path = tmp_path / "u.tfrecord"
    write_tfrecord(path, csm_to_csmtriu(c), freqs=[1000.0])
    ds = dataset(path, array=str(tmp_path / "a.npy"), aperture=None)
    np.testing.assert_allclose(ds.mic_positions, ref)


def test_simulated_lines_write_n_f_m_m_and_read_back(tmp_path):
    from gan_cli.data.csm_sim import CsmSimulator, SimParams

    cfg = dict(array="minidsp_uma-16", aperture=None, helmholtz=None, frequency=[1000, 2000, 4000], c=343.0,
               mode="wishart", snapshots=200, num_samples=6, max_sources=3, reference_mic=None, seed=1)
    sim = CsmSimulator(SimParams.from_mapping(cfg))
    path = sim.write(tmp_path / "lines.h5", progress=False)
    with h5py.File(path) as f:
        assert f["csm"].shape == (6, 3, 16, 16) and f["eigenvalues"].shape == (6, 3, 16)
        np.testing.assert_allclose(f["f"][()], [1000, 2000, 4000])
    whole = sim.simulate()["csm"]
    for k, hz in enumerate([1000, 2000, 4000]):
        d = read_csm_file(path, freq_index=k)
        assert d.frequencies.tolist() == [hz]
        np.testing.assert_allclose(d.csm, whole[:, k], rtol=1e-5, atol=1e-5 * np.abs(whole).max())
    # line 0 of the multi-line set is the one-line set at that frequency
    one = CsmSimulator(SimParams.from_mapping({**cfg, "frequency": 1000})).simulate()["csm"]
    np.testing.assert_allclose(whole[:, 0], one)
    ds = dataset(path, freq_index="all")
    assert ds.line_frequencies == [1000.0, 2000.0, 4000.0] and ds.arrays()[0].shape == (18, 16, 16, 2)
    with pytest.raises(ConfigError, match="contradicts"):
        dataset(path, frequency=[1000, 2000, 3000])


def test_written_samples_describe_their_content(tmp_path):
    """gan sample's file: one line -> (n, M, M) at that frequency; all lines -> (n, L, M, M) with `f`;
    `normalised` only when C[ref, ref] = 1 (eigmode), and the file reads back at its frequencies."""
    from gan_cli.data.csm_sim import CsmSimulator, SimParams

    cfg = dict(array="minidsp_uma-16", aperture=None, helmholtz=None, frequency=[1000, 3000], c=343.0,
               mode="analytic", snapshots=1, num_samples=8, max_sources=3, reference_mic=None, seed=2)
    path = CsmSimulator(SimParams.from_mapping(cfg)).write(tmp_path / "two.h5", progress=False)
    for rep, normalised in (("eigenvectors", False), ("eigmode", True)):
        from gan_cli.data.csm import CsmDataset

        ds = CsmDataset(path=str(path), representation=rep, freq_index="all")
        x, y = ds.arrays()
        out = tmp_path / f"one_{rep}.h5"
        ds.write_samples(x[y == 1][:3], y[y == 1][:3], out)
        d = read_csm_file(out)
        assert d.csm.shape == (3, 16, 16) and d.frequencies.tolist() == [3000.0]
        assert d.attrs["label"] == 1 and bool(d.attrs["normalised"]) is normalised and bool(d.attrs["psd"])
        pref = d.csm[:, 15, 15].real
        assert d.attrs["ref_autopower_min"] == pytest.approx(pref.min(), rel=1e-5)
        if not normalised:
            assert not np.allclose(pref, 1.0, atol=1e-4)
        both = tmp_path / f"both_{rep}.h5"
        ds.write_samples(x[:6], y[:6], both)                    # labels 0, 1, 0, 1, ...: 3 of each line
        d = read_csm_file(both, freq_index="all")
        assert d.csm.shape == (6, 16, 16) and d.file_frequencies.tolist() == [1000.0, 3000.0]
        np.testing.assert_array_equal(d.labels, [0, 1, 0, 1, 0, 1])
        np.testing.assert_allclose(d.csm, ds.to_user_space(x[:6], y[:6]), rtol=1e-4, atol=1e-5)


def test_per_line_metrics_are_reported_with_their_frequency(tmp_path):
    from gan_cli.data.csm_sim import CsmSimulator, SimParams

    cfg = dict(array="minidsp_uma-16", aperture=None, helmholtz=None, frequency=[1000, 3000], c=343.0,
               mode="wishart", snapshots=200, num_samples=40, max_sources=3, reference_mic=None, seed=3)
    path = CsmSimulator(SimParams.from_mapping(cfg)).write(tmp_path / "two.h5", progress=False)
    ds = dataset(path, freq_index="all", eval_grid=5, eval_samples=10)
    x, y = ds.arrays()
    metrics = evaluator_for(ds, 20, seed=0)(x[:40], y[:40])
    assert "spectrum_db@1000Hz" in metrics and "spectrum_db@3000Hz" in metrics
    assert metrics["spectrum_db"] == pytest.approx((metrics["spectrum_db@1000Hz"] + metrics["spectrum_db@3000Hz"]) / 2)
    # the lines differ: scoring line-3000 samples as line 1000 is worse than as themselves
    swapped = evaluator_for(ds, 20, seed=0)(x[:40], 1 - y[:40])
    assert swapped["spectrum_db@1000Hz"] > metrics["spectrum_db@1000Hz"]
    assert {k for k in metrics if k.startswith("peak_")} and all(np.isfinite(v) for v in metrics.values())


def test_freq_index_values_are_checked():
    from gan_cli.data.csm import parse_freq_index

    assert parse_freq_index(2) == 2 and parse_freq_index("all") == "all" and parse_freq_index([0, 2]) == [0, 2]
    for bad in (-1, "some", [], [1, 1], [0, -2], 1.5, True):
        with pytest.raises(ConfigError, match="dataset.freq_index"):
            parse_freq_index(bad)


def test_write_csm_h5_multi_line_needs_the_frequencies(tmp_path):
    c = random_csm(6, 4).reshape(3, 2, 4, 4)
    with pytest.raises(DataError, match="line frequencies"):
        write_csm_h5(tmp_path / "x.h5", c, reference_mic=3)
    write_csm_h5(tmp_path / "x.h5", c, reference_mic=3, frequencies=[100.0, 200.0])
    d = read_csm_file(tmp_path / "x.h5", freq_index=1)
    np.testing.assert_allclose(d.csm, c[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.frequencies, [200.0])


def test_tfrecord_csm_feature_is_read_as_complex_pairs(tmp_path):
    import tensorflow as tf

    c = random_csm(3 * 2, 8, seed=5).reshape(3, 2, 8, 8)
    path = tmp_path / "csm.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for sample in c:                               # AcouPipe's complex_list_feature: last axis [re, im]
            pairs = np.stack([sample.real, sample.imag], -1).reshape(-1)
            feat = {"csm": tf.train.Feature(float_list=tf.train.FloatList(value=pairs)),
                    "f": tf.train.Feature(float_list=tf.train.FloatList(value=[300.0, 600.0]))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    d = read_csm_file(path, freq_index=1)
    np.testing.assert_allclose(d.csm, c[:, 1], rtol=1e-5, atol=1e-6)
    assert d.frequencies.tolist() == [600.0]


# ----------------------------------------------------------------------------- end to end (CLI)
TINY = ["model=csm_mlp", "model.generator.hidden=[16]", "model.discriminator.filters=[4,8]", "train.steps=2",
        "train.eval_every=2", "train.checkpoint_every=2", "train.batch_size=8", "metrics.num_samples=16",
        "train.progress=false", "train.report=false", "dataset.eval_samples=10", "dataset.eval_grid=5"]


@pytest.fixture(scope="module")
def lines_run(tmp_path_factory):
    """A 2-line, 16-mic file from `gan data csm dataset.frequency=[...]`, trained on both lines."""
    from conftest import run_gan

    root = tmp_path_factory.mktemp("lines")
    data = root / "lines.h5"
    out = run_gan(["data", "csm", "-o", str(data), "dataset.frequency=[1000,3000]", "dataset.array=minidsp_uma-16",
                   "dataset.aperture=null", "dataset.num_samples=24", "dataset.snapshots=100"], cwd=root)
    assert out.returncode == 0 and "2 lines (N, F, M, M) at f=1000, 3000 Hz" in out.stdout, out.stderr[-2000:]
    run = root / "run"
    out = run_gan(["train", "dataset=csm", f"dataset.path={data}", "dataset.freq_index=all", *TINY,
                   f"hydra.run.dir={run}"], cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return root, data, run


def test_cli_trains_all_lines_and_samples_each(lines_run, capsys):
    import json

    from conftest import gan

    root, _, run = lines_run
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"spectrum_db", "spectrum_db@1000Hz", "spectrum_db@3000Hz", "peak_level_dist@3000Hz"} <= set(last)
    assert "conditional: true" in (run / "resolved_config.yaml").read_text()
    assert gan("sample", str(run), "--frequency", "3000", "-n", "3", "-o", str(root / "f3000.h5")) == 0
    d = read_csm_file(root / "f3000.h5")
    assert d.csm.shape == (3, 16, 16) and d.frequencies.tolist() == [3000.0] and d.attrs["label"] == 1
    assert np.linalg.eigvalsh(d.csm).min() > -1e-6 and bool(d.attrs["psd"])
    assert gan("sample", str(run), "--label", "0", "-n", "2", "-o", str(root / "l0.h5")) == 0
    assert read_csm_file(root / "l0.h5").frequencies.tolist() == [1000.0]
    assert gan("sample", str(run), "-n", "2", "-o", str(root / "all.h5")) == 0
    with h5py.File(root / "all.h5") as f:
        assert f["csm"].shape == (2, 2, 16, 16) and f["f"][()].tolist() == [1000.0, 3000.0]
    capsys.readouterr()
    assert gan("sample", str(run), "--frequency", "2000", "-n", "2", "-o", str(root / "bad.h5")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1000, 3000 Hz" in err[0] and not (root / "bad.h5").exists()


@needs_files
def test_cli_refuses_a_file_with_the_wrong_array_in_one_line(lines_run):
    from conftest import run_gan

    root = lines_run[0]
    out = run_gan(["train", "dataset=csm", f"dataset.path={ACOUPIPE / 'uma16_wishart_f1_n20.tfrecord'}", *TINY,
                   f"hydra.run.dir={root / 'refused'}"], cwd=root)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and "dataset.array" in lines[0], out.stderr[-2000:]
    assert not (root / "refused" / "checkpoints").exists()


def test_a_line_at_0_hz_is_refused(tmp_path):
    """AcouPipe with f=None stores every FFT bin, the first at 0 Hz: no wave field to beamform."""
    c = random_csm(2 * 2, 16, seed=6).reshape(2, 2, 16, 16)
    path = tmp_path / "dc.h5"
    with h5py.File(path, "w") as f:
        for i, sample in enumerate(c):
            g = f.create_group(str(i))
            g["csmtriu"] = csm_to_csmtriu(sample).astype(np.float64)
            g["f"] = np.array([0.0, 107.1875])
    with pytest.raises(ConfigError, match="line 0 is at 0 Hz"):
        dataset(path, freq_index="all", **ARRAY[16])
    assert dataset(path, freq_index=1, **ARRAY[16]).frequency == 107.1875
