"""Shared caches and written files under chaos: parallel builders, SIGKILL at random moments, corrupted
files, concurrent sweeps; plus the pieces (gan_cli.data.cache, verify_csm_file, validate_geometry) and
exit statuses. The scenarios live in benchmarks/chaos.py (which runs them with larger counts)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import gan
from gan_cli.data import cache
from gan_cli.data.csm_io import verify_csm_file, write_csm_h5
from gan_cli.data.csm_sim import validate_geometry
from gan_cli.core.errors import DataError

_spec = importlib.util.spec_from_file_location("benchmarks_chaos",
                                               Path(__file__).resolve().parents[1] / "benchmarks" / "chaos.py")
chaos = sys.modules["benchmarks_chaos"] = importlib.util.module_from_spec(_spec)  # (dataclasses look it up)
_spec.loader.exec_module(chaos)


def _check(result):
    assert result.wrong == 0, (result.row(), result.notes)


# --------------------------------------------------------------------------- chaos scenarios
def test_parallel_processes_build_one_cache(tmp_path):
    result = chaos.parallel_builds(tmp_path, n=4, rounds=1)
    _check(result)
    assert result.outcomes == {"one build, all jobs done": 1}


def test_sigkill_during_a_cache_build_never_leaves_a_half_written_cache(tmp_path):
    result = chaos.kill_cache_builds(tmp_path, kills=1, seed=1)
    _check(result)
    assert result.tries == 1


def test_sigkill_during_gan_data_csm_keeps_the_old_file_or_writes_a_complete_one(tmp_path):
    result = chaos.kill_data_command(tmp_path, kills=1, seed=2)  # over an older complete file
    _check(result)
    assert result.tries == 1


def test_every_kind_of_corrupted_cache_is_detected_and_rebuilt(tmp_path):
    result = chaos.corrupt_caches(tmp_path, tries=len(chaos.CORRUPTIONS), seed=3)
    _check(result)
    assert result.outcomes == {"detected, rebuilt": len(chaos.CORRUPTIONS)}


def test_every_kind_of_corrupted_user_file_is_refused_with_one_line(tmp_path):
    result = chaos.corrupt_user_files(tmp_path, tries=len(chaos.CORRUPTIONS), seed=4)
    _check(result)
    assert result.outcomes == {"refused, exit 2, one line": len(chaos.CORRUPTIONS)}


@pytest.mark.slow
def test_a_sweep_over_a_corrupted_data_file_fails_that_job_in_one_line_and_exits_non_zero(tmp_path):
    _check(chaos.sweep_with_a_corrupt_file(tmp_path))


@pytest.mark.slow
def test_two_sweeps_at_once_on_a_fresh_data_folder(tmp_path):
    _check(chaos.concurrent_sweeps(tmp_path))


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_then_resume(tmp_path):
    """Also: a truncated newest checkpoint makes `gan resume` fall back to the previous one and say so."""
    result = chaos.kill_checkpoint_writes(tmp_path, kills=2, seed=5)
    _check(result)
    assert sum(v for k, v in result.outcomes.items() if "resumed" in k) == 2, result.outcomes  # both kills landed


# --------------------------------------------------------------------------- gan_cli.data.cache
BUILDER = r"""
import sys, time
from pathlib import Path
from gan_cli.data.cache import build_once
from gan_cli.core.errors import DataError

def build(tmp):
    print("BUILT", flush=True)
    tmp.write_text("partial")
    time.sleep(0.3)
    tmp.write_text("complete")

def load(path):
    text = path.read_text()
    if text != "complete":
        raise DataError(f"holds {text!r}")
    return text

print(build_once(Path(sys.argv[1]), build, load, what="test cache"))
"""


def test_build_once_across_processes_builds_once_and_others_wait(tmp_path):
    target = tmp_path / "c" / "thing.txt"
    target.parent.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(target)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(o.count("BUILT") for o, _ in outs) == 1
    assert all(o.strip().endswith("complete") for o, _ in outs)
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing.txt", "thing.txt.lock"]


def test_build_once_moves_a_failing_file_aside_and_says_so(tmp_path, capsys):
    target = tmp_path / "thing.txt"
    target.write_text("garbage")
    stale = cache.temp_path(target)
    stale.write_text("left by a killed builder")
    builds = []

    def build(tmp):
        builds.append(tmp)
        tmp.write_text("complete")

    def load(path):
        if path.read_text() != "complete":
            raise DataError(f"{path}: holds garbage; rebuild it")
        return "ok"

    assert cache.build_once(target, build, load, what="test cache") == "ok"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed its check (holds garbage)" in err[0] and "rebuilding" in err[0]
    assert len(builds) == 1 and builds[0].name.startswith(".thing.txt.") and builds[0].suffix == ".txt"
    assert not stale.exists() and [p.read_text() for p in tmp_path.glob("thing.txt.bad-*")] == ["garbage"]
    assert cache.build_once(target, build, load) == "ok" and len(builds) == 1  # reused
    # a build whose result still fails is an error, not an endless rebuild
    target.write_text("garbage")
    with pytest.raises(DataError):
        cache.build_once(target, lambda tmp: tmp.write_text("still bad"), load)
    assert len(list(tmp_path.glob("thing.txt.bad-*"))) == 1  # only the newest failing file is kept


def test_build_once_removes_its_temporary_when_the_build_fails(tmp_path):
    def build(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.build_once(tmp_path / "x.h5", build, lambda p: p)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5.lock"]


def test_waiting_process_prints_a_progress_line(tmp_path):
    target = tmp_path / "thing.txt"
    holder = subprocess.Popen([sys.executable, "-c", BUILDER.replace("time.sleep(0.3)", "time.sleep(2)"),
                               str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not cache.stale_temporaries(target) and time.monotonic() < deadline:
        time.sleep(0.01)
    waiter = subprocess.run([sys.executable, "-c", BUILDER, str(target)], capture_output=True, text=True, timeout=60)
    holder.communicate(timeout=60)
    assert waiter.returncode == 0 and "BUILT" not in waiter.stdout
    assert "waiting for another process to finish writing the test cache thing.txt" in waiter.stderr


# --------------------------------------------------------------------------- CSM files
def _csm(n=4, m=4, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, m, 8)) + 1j * rng.standard_normal((n, m, 8))
    return a @ np.conj(np.swapaxes(a, -1, -2)) / 8


MICS = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0.1, 0.1, 0.0]])


def test_written_files_record_completeness_version_and_checksums(tmp_path):
    path = write_csm_h5(tmp_path / "a.h5", _csm(), reference_mic=3, mic_positions=MICS, attrs={"frequency": 1e3})
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 2 and f.attrs["complete"] == 1
        sums = json.loads(f.attrs["checksums"])
    assert {"csm", "csmtriu", "eigenvalues", "eigenvectors", "mic_positions", "attrs"} <= set(sums)
    verify_csm_file(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]  # no temporary, no lock beside a user file


@pytest.mark.parametrize("mics, match", [
    (np.zeros((4, 3)), "all 4 microphones are at one point"),
    (np.where(np.arange(12).reshape(4, 3) == 4, np.nan, MICS), "1 of 4 microphone positions are NaN"),
    (MICS[[0, 1, 2, 1]], "microphones 1 and 3 are at the same position"),
    (MICS[:3], "has 3 microphones but the CSMs are 4 x 4"),
    (MICS[:, :2], r"has shape \(4, 2\), expected \(M, 3\)"),
])
def test_impossible_geometry_is_refused_in_one_line(tmp_path, mics, match):
    with pytest.raises(DataError, match=match) as info:
        validate_geometry(mics, expected_m=4, where="test")
    assert "\n" not in str(info.value)


def test_a_file_with_impossible_geometry_is_refused_before_any_beamforming(tmp_path, monkeypatch, capsys):
    """The issue's corrupt cache: correct CSMs, every mic_positions entry 0, checksums intact."""
    path = tmp_path / "zeros.h5"
    with h5py.File(path, "w") as f:  # a file of the earlier format (no checksums) with the zero geometry
        f.create_dataset("csm", data=_csm().astype(np.complex64))
        f.create_dataset("mic_positions", data=np.zeros((4, 3)))
        f.attrs.update(format="gan-cli-csm", format_version=1, reference_mic=3, frequency=1000.0, c=343.0)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert gan("train", "dataset=csm", f"dataset.path={path}", "train.steps=2") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {path}: mic_positions: all 4 microphones are at one point [0.0, 0.0, 0.0]; give the geometry of "
        "the array that recorded the data (dataset.array) or regenerate the file"]


def test_a_file_with_nan_entries_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    c = _csm(n=8)
    c[5, 0, 3] = c[5, 3, 0] = np.nan
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as f:  # (gan-cli's writer would stop at the NaN: a file written by other code)
        f.create_dataset("csm", data=c.astype(np.complex64))
        f.create_dataset("mic_positions", data=MICS)
        f.attrs.update(format="gan-cli-csm", format_version=1, reference_mic=3, frequency=1000.0, c=343.0)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert gan("train", "dataset=csm", f"dataset.path={path}", "train.steps=2") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {path}: 1 of 8 CSMs have NaN or infinite entries; fix or regenerate the file"]


def test_incomplete_and_newer_files_are_refused(tmp_path):
    path = write_csm_h5(tmp_path / "a.h5", _csm(), reference_mic=3)
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = 0
    with pytest.raises(DataError, match="is incomplete"):
        verify_csm_file(path)
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = 1
        f.attrs["format_version"] = 99
    with pytest.raises(DataError, match="newer than this gan-cli reads"):
        verify_csm_file(path)


def test_classifier_cache_that_fails_to_load_is_rebuilt(tmp_path, monkeypatch, capsys):
    import gan_cli.metrics.images as mi
    from gan_cli.data.images import DigitsDataset

    monkeypatch.setenv("GAN_CLI_DATA", str(tmp_path))
    data = DigitsDataset()
    trained = []

    def quick(data, num_classes, pretext):  # an untrained classifier: the cache mechanics, not its quality
        trained.append(1)
        return mi.build_classifier(data.sample_shape, num_classes), 0.5

    monkeypatch.setattr(mi, "_train_classifier", quick)
    _, _, path = mi.get_classifier(data, verbose=False)
    assert len(trained) == 1 and path.is_file()
    mi.get_classifier(data, verbose=False)
    assert len(trained) == 1  # reused
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    capsys.readouterr()
    mi.get_classifier(data, verbose=False)
    assert len(trained) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metric classifier cache" in err[0] and "failed its check" in err[0]
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(path.name + ".bad-")) == [
        path.name, path.name + ".lock"]


# --------------------------------------------------------------------------- exit statuses
@pytest.mark.parametrize("sig, status, line", [(signal.SIGTERM, 143, "error: terminated (SIGTERM)"),
                                               (signal.SIGINT, 130, "error: interrupted")])
def test_a_signal_during_gan_data_csm_exits_128_plus_its_number_and_leaves_nothing(tmp_path, sig, status, line):
    out = tmp_path / "big.h5"
    for num_samples in (50_000, 100_000, 200_000):  # a busy test machine can let a short write finish first
        proc = subprocess.Popen([sys.executable, "-m", "gan_cli.cli.main", "data", "csm", "-o", str(out),
                                 "array=minidsp_uma-16", f"num_samples={num_samples}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ},
                                # as from a terminal: a suite started in the background (`cmd &`) ignores
                                # SIGINT, and a child inherits that (gan then keeps it ignored, as with nohup)
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 120
        while not cache.stale_temporaries(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        running = proc.poll() is None and bool(cache.stale_temporaries(out))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        if running:
            break
        out.unlink(missing_ok=True)  # the write ended before the signal: try a longer one
    assert running, "the simulation finished before it could be interrupted, even with 200,000 samples"
    assert proc.returncode == status, err[-2000:]
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
