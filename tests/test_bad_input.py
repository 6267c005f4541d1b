"""Bad input tried on purpose: every mistake ends with exit status 2 and one line on stderr,
never a traceback, and never a run folder with checkpoints.

Overrides are checked in-process (``gan_cli.cli.main.main(["train", ...])`` validates everything
before Hydra creates a folder or TensorFlow is imported) with hypothesis generating many of
them; a handful of representative ones also go through a real ``gan`` subprocess.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY, compose, run_gan
from gan_cli.cli import main as cli
from gan_cli.config.resolve import MAX_INT, TRAIN_SCHEMA
from gan_cli.core.errors import UserError

INT_KEYS = {f"train.{k}": spec[1] for k, spec in TRAIN_SCHEMA.items() if spec[0] is int}
INT_KEYS.update({"latent.dim": 1, "metrics.num_samples": 2})
NON_NULL_INT_KEYS = [f"train.{k}" for k, spec in TRAIN_SCHEMA.items() if spec[0] is int and not spec[2]]
NON_NULL_INT_KEYS.append("metrics.num_samples")
BOOL_KEYS = [f"train.{k}" for k, spec in TRAIN_SCHEMA.items() if spec[0] is bool]
GROUPS = ("dataset", "loss", "model", "optimizer", "experiment")
SECTIONS = ("train", "latent", "metrics")
KNOWN = {*GROUPS, *SECTIONS, "hydra", *TRAIN_SCHEMA, "dim", "distribution", "num_samples"}
YAML_WORDS = {"null", "true", "false", "nan", "inf", "none", "yes", "no", "on", "off"}

words = st.from_regex(r"[a-z][a-z_]{0,9}", fullmatch=True).filter(lambda w: w not in KNOWN | YAML_WORDS)
not_a_number = st.one_of(words, st.sampled_from(["", "1.5", "2e3", "true", "false", "[1,2]", "{a: 1}", "'7'"]))


@st.composite
def bad_override(draw) -> list[str]:
    """One invalid override (sometimes two tokens: a group choice and a value inside it)."""
    kind = draw(st.sampled_from(["int_type", "int_low", "int_high", "bool_type", "null", "unknown_key",
                                 "unknown_add", "unknown_group", "bad_choice", "empty",
                                 "nan_policy", "lr", "float_range", "distribution"]))
    if kind == "int_type":
        return [f"{draw(st.sampled_from(sorted(INT_KEYS)))}={draw(not_a_number)}"]
    if kind == "int_low":
        key = draw(st.sampled_from(sorted(INT_KEYS)))
        return [f"{key}={draw(st.integers(max_value=INT_KEYS[key] - 1))}"]
    if kind == "int_high":
        return [f"{draw(st.sampled_from(sorted(INT_KEYS)))}={draw(st.integers(min_value=MAX_INT + 1))}"]
    if kind == "bool_type":
        value = draw(st.one_of(words, st.integers().map(str), st.sampled_from(["", "1.0", "[true]"])))
        return [f"{draw(st.sampled_from(BOOL_KEYS))}={value}"]
    if kind == "null":
        return [f"{draw(st.sampled_from(sorted(NON_NULL_INT_KEYS + BOOL_KEYS)))}=null"]
    if kind == "unknown_key":
        return [f"{draw(st.sampled_from(SECTIONS))}.{draw(words)}={draw(st.integers())}"]
    if kind == "unknown_add":
        return [f"+{draw(st.sampled_from(('train', 'latent', 'metrics', 'dataset')))}.{draw(words)}=1"]
    if kind == "unknown_group":
        return [f"{draw(words)}={draw(words)}"]
    if kind == "bad_choice":
        return [f"{draw(st.sampled_from(GROUPS))}={draw(words)}"]
    if kind == "empty":
        keys = ["loss", "dataset", "model", "optimizer", "train.on_nan", "loss.name", "latent.distribution",
                *sorted(INT_KEYS), *BOOL_KEYS]
        return [f"{draw(st.sampled_from(keys))}="]
    if kind == "nan_policy":
        return [f"train.on_nan={draw(words.filter(lambda w: w not in ('stop', 'rollback')))}"]
    if kind == "lr":
        lr = draw(st.one_of(st.floats(max_value=0.0, allow_nan=False).map(repr), st.integers(max_value=0).map(str),
                            words, st.just("")))
        net = draw(st.sampled_from(["generator", "discriminator"]))
        return [f"optimizer={draw(st.sampled_from(['adam', 'sgd', 'rmsprop']))}", f"optimizer.{net}.lr={lr}"]
    if kind == "float_range":
        value = draw(st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(float("nan"))))
        return [f"train.nan_lr_factor={value!r}"]
    return [f"latent.distribution={draw(words.filter(lambda w: w not in ('gaussian', 'uniform')))}"]


@pytest.fixture
def no_training(monkeypatch):
    """Anything that got past validation would next import TensorFlow: make that a test failure."""
    def refuse():
        raise AssertionError("validation let a bad override through")

    monkeypatch.setattr("gan_cli.core.tf_import.quiet_tensorflow", refuse)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(override=bad_override(), extra=st.lists(st.sampled_from(TINY), max_size=3, unique=True),
       multirun=st.booleans())
def test_bad_overrides_exit_2_with_one_line(override, extra, multirun, tmp_path, capsys, no_training):
    capsys.readouterr()
    run_dir = tmp_path / "run"
    flags = ["-m"] if multirun else []
    argv = ["train", *flags, *extra, *override, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}"]
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    _one_error_line(out.err)
    assert out.out == ""
    assert not run_dir.exists()


@pytest.mark.parametrize("override,needle", [
    ("train.steps=", "train.steps must be an integer, got ''"),
    ("loss=", "Available options in 'loss'"),
    ("nosuchgroup=x", "Could not override 'nosuchgroup'"),
    ("train.seed=99999999999", "train.seed must be <= 2147483647"),
    ("train.on_nan=maybe", "train.on_nan 'maybe' unknown"),
    ("train.nan_lr_factor=1.5", "train.nan_lr_factor must be in (0, 1)"),
])
def test_bad_overrides_through_the_real_command(tmp_path, override, needle):
    run_dir = tmp_path / "run"
    out = run_gan(["train", *TINY, override, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert needle in _one_error_line(out.stderr)
    assert not run_dir.exists()


def test_bad_model_setting_found_while_building_leaves_no_folder(tmp_path):
    """A model setting that only the network builder checks (after Hydra made the run folder): exit 2, one
    line, and neither the run folder nor the empty date folder above it stays behind."""
    out = run_gan(["train", "dataset=csm", "model=csm_mlp", "dataset.array=minidsp_uma-16", "dataset.num_samples=16",
                   "model.discriminator.negative_slope=-0.1", "train.progress=false"], cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    # the data set's simulation progress bar comes first; the error is the one line after it
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model.discriminator.negative_slope must be a number in [0, 1)"), last
    outputs = tmp_path / "outputs"
    assert not outputs.exists() or not any(outputs.iterdir())


# ------------------------------------------------------------------ unusable output folder
def test_run_dir_under_a_file_in_process(tmp_path, capsys, no_training):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    for argv in (["train", f"hydra.run.dir={blocker}/run"], ["train", f"hydra.run.dir={blocker}"],
                 ["train", "-m", "train.seed=0,1", f"hydra.sweep.dir={blocker}/sweep"]):
        capsys.readouterr()
        assert cli.main(argv) == 2
        assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)
    assert blocker.read_text() == "not a folder\n"


def test_run_dir_under_a_file_through_the_real_command(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = run_gan(["train", *TINY, f"hydra.run.dir={blocker}/run"], cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "is a file, not a folder" in _one_error_line(out.stderr)


@pytest.mark.parametrize("value", ["maybe", "1", "null", "[auto]"])
def test_jit_compile_is_true_false_or_auto(tmp_path, capsys, no_training, value):
    assert cli.main(["train", f"train.jit_compile={value}", f"hydra.run.dir={tmp_path}/run"]) == 2
    assert "train.jit_compile must be true, false or auto" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["maybe", "1", "half", "[true]", "float64"])
def test_mixed_precision_is_a_bool_float16_or_bfloat16(tmp_path, capsys, no_training, value):
    assert cli.main(["train", f"train.mixed_precision={value}", f"hydra.run.dir={tmp_path}/run"]) == 2
    assert "train.mixed_precision must be false, true, float16 or bfloat16" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, capsys, no_training):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert cli.main(["train", f"hydra.run.dir={ro}/run"]) == 2
        assert "is not writable" in _one_error_line(capsys.readouterr().err)
        assert not (ro / "run").exists()
    finally:
        ro.chmod(0o700)


def test_full_disk_is_refused_before_starting(tmp_path, capsys, monkeypatch, no_training):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: type("Usage", (), {"total": 100, "used": 100, "free": 0})())
    assert cli.main(["train", f"hydra.run.dir={tmp_path}/run"]) == 2
    assert "no space left" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_disk_full_while_checkpointing_leaves_no_partial_file(tmp_path, monkeypatch):
    """ENOSPC in the middle of a checkpoint write: a one-line UserError, no .tmp, no truncated ckpt."""
    import gan_cli.run.checkpoint as ckpt_mod
    from gan_cli.job.train import train

    real_write = ckpt_mod._write_file

    def write_then_fail(path, arrays, attrs):
        real_write(path, arrays, attrs)  # the bytes are written, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt_mod, "_write_file", write_then_fail)
    with pytest.raises(UserError) as info:
        train(compose([*TINY, "train.steps=10", "train.eval_every=10"]), tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "cannot write the run folder" in message
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


# ------------------------------------------------------------------ data files
NO_DATASET_TINY = [o for o in TINY if not o.startswith("dataset.")]


def _truncated_h5(path: Path) -> None:
    full = path.with_suffix(".full.h5")
    with h5py.File(full, "w") as f:
        f["images"] = np.random.default_rng(0).uniform(size=(64, 8, 8)).astype(np.float32)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "wrong_layout", "no_images"])
def test_bad_h5_data_file_is_a_one_line_user_error(tmp_path, case):
    from gan_cli.job.train import train

    path = tmp_path / "data.h5"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        _truncated_h5(path)
    elif case == "wrong_layout":
        with h5py.File(path, "w") as f:
            f["images"] = np.zeros((10,), np.float32)
    elif case == "no_images":
        with h5py.File(path, "w") as f:
            f["pixels"] = np.zeros((10, 8, 8), np.float32)
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as info:
        train(compose([*NO_DATASET_TINY, "dataset=h5", f"dataset.path={path}"]), run_dir)
    assert "\n" not in str(info.value) and str(path.name) in str(info.value)
    assert not run_dir.exists()


# ------------------------------------------------------------------ run folders without checkpoints
@pytest.mark.parametrize("command", ["resume", "reproduce", "evaluate", "sample"])
def test_run_folder_without_checkpoints(tmp_path, capsys, command):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    argv = [command, str(empty)] + (["-o", str(tmp_path / "x.npy")] if command == "sample" else [])
    assert cli.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    needle = "has no .hydra/overrides.yaml" if command == "reproduce" else "has no checkpoints"
    assert needle in line
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("case", ["missing_folder", "checkpoint_file", "truncated_checkpoint"])
def test_resume_bad_targets(tmp_path, capsys, case):
    target = tmp_path / "run"
    if case == "checkpoint_file":
        target = tmp_path / "ckpt_00000010.h5"
        target.write_bytes(b"\x89HDF")
    elif case == "truncated_checkpoint":
        (target / "checkpoints").mkdir(parents=True)
        (target / "checkpoints" / "ckpt_00000010.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    assert cli.main(["resume", str(target)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    needle = {"missing_folder": "does not exist", "checkpoint_file": "gan resume takes the run folder",
              "truncated_checkpoint": "not a readable gan-cli checkpoint"}[case]
    assert needle in line


def test_reproduce_with_a_corrupt_overrides_file_is_one_line(tmp_path, capsys):
    from gan_cli.cli.main import main

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 10, "d_loss": 1.0}\n')
    (run / ".hydra" / "overrides.yaml").write_text("{not: [a list\n")
    assert main(["reproduce", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a YAML list of overrides" in err and "Traceback" not in err
