"""Surviving faults: a real SIGKILL and a real SIGTERM against `gan train` / `gan resume`
subprocesses, exact resume, `gan reproduce`, NaN stop/rollback, and sweeps with a failed job."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, compose, run_gan
from gan_cli.run.checkpoint import list_checkpoints
from gan_cli.core.errors import UserError

# 400 rounds in blocks of 20 (one compiled call per block, so every interrupt lands on a block
# boundary and the logged block-mean losses match an uninterrupted run exactly).
LONG = ["train.steps=400", "train.eval_every=20", "train.checkpoint_every=20", "train.steps_per_execution=20",
        "train.batch_size=32", "metrics.num_samples=200", "train.progress=false", "dataset.num_samples=2000",
        "train.deterministic=true"]


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gan_cli.cli.main", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})


def _step(path: Path) -> int:
    return int(path.stem.split("_")[1])


def _wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, min_step: int, timeout: float = 180) -> int:
    """Poll until a complete checkpoint with step >= min_step exists; returns its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [_step(p) for p in list_checkpoints(run_dir)]
        if steps and max(steps) >= min_step:
            return max(steps)
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before checkpoint {min_step}:\n{err[-3000:]}")
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    pytest.fail(f"no checkpoint >= {min_step} in {run_dir} after {timeout}s")


def _arrays(ckpt: Path) -> dict:
    """The checkpoint's arrays by name (``g/dense/kernel``, ``d_opt/iteration``, ...)."""
    import h5py

    out = {}
    with h5py.File(ckpt, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return {k: v for k, v in out.items() if k.startswith(("g/", "d/", "g_opt/", "d_opt/"))}


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        row.pop("time")
    return rows


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """One deterministic run taken through: SIGTERM mid-run (`gan train`) -> `gan resume` killed with
    SIGKILL mid-run -> `gan resume` to the end -> `gan reproduce` (an uninterrupted run of the same config)."""
    root = tmp_path_factory.mktemp("faults")
    run_dir = root / "run"
    info: dict = {"root": root, "run_dir": run_dir}

    proc = _popen(["train", *LONG, f"hydra.run.dir={run_dir}"], root)
    _wait_for_checkpoint(proc, run_dir, 40)  # a checkpoint past the first one
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    info["term_rc"], info["term_err"] = proc.returncode, err
    info["after_term"] = [_step(p) for p in list_checkpoints(run_dir)]

    proc = _popen(["resume", str(run_dir)], root)
    _wait_for_checkpoint(proc, run_dir, max(info["after_term"]) + 40)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    info["kill_rc"] = proc.returncode
    info["after_kill"] = [_step(p) for p in list_checkpoints(run_dir)]

    info["resume"] = run_gan(["resume", str(run_dir)], cwd=root)
    info["reproduce"] = run_gan(["reproduce", str(run_dir)], cwd=root)
    return info


def test_sigkill_halfway_then_resume_matches_an_uninterrupted_run(faults):
    run_dir = faults["run_dir"]
    assert faults["kill_rc"] == -signal.SIGKILL
    assert max(faults["after_term"]) + 40 <= max(faults["after_kill"]) < 400, faults  # killed half-way
    resumed = faults["resume"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {max(faults['after_kill'])}" in resumed.stderr
    assert "done: step 400" in resumed.stderr and (run_dir / "DONE").is_file()
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    # metrics.jsonl: every evaluation exactly once, in order, although the run was stopped twice
    assert [r["step"] for r in _rows(run_dir)] == list(range(20, 401, 20))

    reproduced = faults["reproduce"]
    assert reproduced.returncode == 0, reproduced.stderr[-3000:]
    fresh_dirs = list((faults["root"] / "outputs").glob("*/*_reproduce"))
    assert len(fresh_dirs) == 1
    fresh = fresh_dirs[0]
    assert _rows(fresh) == _rows(run_dir)  # same losses and quality metrics at every step
    a, b = _arrays(run_dir / "checkpoints" / "ckpt_00000400.h5"), _arrays(fresh / "checkpoints" / "ckpt_00000400.h5")
    assert a.keys() == b.keys() and len(a) > 8
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(faults):
    err = faults["term_err"]
    assert faults["term_rc"] == 143, err[-3000:]
    assert "interrupted (SIGTERM) at step" in err and f"Continue with: gan resume {faults['run_dir']}" in err
    assert "Traceback" not in err
    step = int(err.split("interrupted (SIGTERM) at step ")[1].split(";")[0])
    assert 40 <= step < 400 and max(faults["after_term"]) == step  # its checkpoint is the newest
    assert faults["resume"].returncode == 0  # ... and resuming finishes (checked in detail above)


def test_reproduce_reports_identical_final_metrics(faults):
    out = faults["reproduce"]
    assert out.returncode == 0, out.stderr[-3000:]
    assert "reproduced: final metrics of" in out.stdout and "identical" in out.stdout, out.stdout


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    from gan_cli.job.train import train

    cfg = compose([*TINY, "train.deterministic=true"])
    first = train(cfg, tmp_path)
    rows = (tmp_path / "metrics.jsonl").read_text()
    again = train(cfg, tmp_path, resume=True)
    assert (tmp_path / "metrics.jsonl").read_text() == rows
    assert {k: v for k, v in first.items() if k != "time"} == {k: v for k, v in again.items() if k != "time"}


def test_resume_cleans_up_after_a_crash_mid_write(tmp_path):
    """A killed process can leave a checkpoint .tmp and a half-written metrics row: resume ignores both."""
    from gan_cli.job.train import train

    cfg = compose([*TINY, "train.deterministic=true"])
    train(compose([*TINY, "train.deterministic=true", "train.steps=10"]), tmp_path)
    (tmp_path / "checkpoints" / "ckpt_00000020.h5.tmp").write_bytes(b"\x89HDF\r\n half")
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 20, "d_loss": 1.3')
    train(cfg, tmp_path, resume=True)
    assert [r["step"] for r in _rows(tmp_path)] == [10, 20]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt_00000010.h5", "ckpt_00000020.h5"]


def test_resume_falls_back_from_a_corrupt_latest_checkpoint(tmp_path, capsys):
    """A truncated newest checkpoint: resume says so in one line, continues from the previous one and
    ends with the final metrics of the uninterrupted run."""
    from gan_cli.cli.main import main
    from gan_cli.job.train import train

    run = tmp_path / "run"
    reference = train(compose([*TINY, "train.deterministic=true", "train.keep_checkpoints=2"]), run)
    newest = run / "checkpoints" / "ckpt_00000020.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    capsys.readouterr()
    assert main(["resume", str(run)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "ckpt_00000020.h5 is unreadable" in warnings[0], warnings
    assert "using the previous checkpoint ckpt_00000010.h5" in warnings[0]
    assert [r["step"] for r in _rows(run)] == [10, 20]
    final = _rows(run)[-1]
    assert {k: final[k] for k in reference if k != "time"} == {k: v for k, v in reference.items() if k != "time"}


def test_old_npz_checkpoints_are_a_one_line_error(tmp_path, capsys):
    from gan_cli.cli.main import main

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "ckpt_00000010.npz").write_bytes(b"PK\x03\x04")
    for argv in (["resume", str(tmp_path / "run")], ["evaluate", str(tmp_path / "run")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "older gan-cli (ckpt_*.npz" in err


# ------------------------------------------------------------------ NaN / Inf
NAN_CFG = [*TINY, "train.steps_per_execution=1", "train.eval_every=5", "train.checkpoint_every=5"]


@pytest.fixture
def poison_at(monkeypatch):
    """Make a discriminator weight NaN right after the given round (the first `times` times it is reached):
    ``which=-1`` the output bias, ``which=0`` the first kernel."""
    from gan_cli.callbacks.monitor import RunMonitor

    state = {"step": None, "times": 0, "which": -1}
    original = RunMonitor.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        result = original(self, batch, logs)  # the losses of this round are still finite
        if int(self.gan.round.numpy()) == state["step"] and state["times"] > 0:
            state["times"] -= 1
            w = self.gan.discriminator.weights[state["which"]]
            w.assign(np.full(w.shape, np.nan, np.float32))
        return result

    monkeypatch.setattr(RunMonitor, "on_train_batch_end", on_train_batch_end)

    def arm(step: int, times: int = 1, which: int = -1):
        state.update(step=step, times=times, which=which)

    return arm


# The output bias poisoned after round 12 makes the next losses NaN (the per-call loss check);
# a kernel poisoned after round 15, the last of its block, is found by the weight check at the
# block's end before its checkpoint is written (ReLU passes NaN on, so earlier it would reach a loss).
@pytest.mark.parametrize("which,step,needle", [(-1, 12, "non-finite d_loss=nan, g_loss=nan at step 13"),
                                               (0, 15, "non-finite weights in steps 11-15")])
def test_nan_stop_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, poison_at, which, step, needle):
    from gan_cli.job.train import train

    poison_at(step, which=which)
    with pytest.raises(UserError) as info:
        train(compose(NAN_CFG), tmp_path)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert needle in message and "train.on_nan=stop" in message and "train.on_nan=rollback" in message
    assert "ckpt_00000010.h5 is kept" in message
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_00000005.h5", "ckpt_00000010.h5"]
    for value in _arrays(tmp_path / "checkpoints" / "ckpt_00000010.h5").values():
        assert np.all(np.isfinite(value))


def test_nan_rollback_lowers_the_learning_rates_and_finishes(tmp_path, poison_at, capsys):
    from gan_cli.job.train import train

    poison_at(12)
    result = train(compose([*NAN_CFG, "optimizer=adam", "train.on_nan=rollback", "train.nan_lr_factor=0.25"]),
                   tmp_path)
    assert result["step"] == 20
    err = capsys.readouterr().err
    assert "rolled back to step 10" in err and "rollback 1 of at most 3" in err
    assert [r["step"] for r in _rows(tmp_path)] == [5, 10, 15, 20]
    cfg_lr = float(compose(["optimizer=adam"]).optimizer.generator.lr)
    arrays = _arrays(tmp_path / "checkpoints" / "ckpt_00000020.h5")
    lrs = [float(arrays[k]) for k in ("g_opt/learning_rate", "d_opt/learning_rate")]
    assert lrs and all(lr == pytest.approx(cfg_lr * 0.25) for lr in lrs)  # stored, so a resume keeps them


def test_nan_rollback_gives_up_after_max_rollbacks(tmp_path):
    """A real NaN (SGD with lr 1e30) that comes back after every rollback."""
    from gan_cli.job.train import train

    cfg = compose([*NAN_CFG, "optimizer=sgd", "optimizer.generator.lr=1e30", "optimizer.discriminator.lr=1e30",
                   "train.on_nan=rollback", "train.max_rollbacks=2"])
    with pytest.raises(UserError) as info:
        train(cfg, tmp_path)
    message = str(info.value)
    assert "\n" not in message and re.search(r"non-finite .+ at step [12] again after 2 rollback\(s\)", message)
    assert "train.max_rollbacks=2" in message and "2.5e+29" in message  # 1e30 * 0.5 * 0.5


def test_sweep_with_a_failing_job_finishes_the_others(tmp_path):
    """Two jobs, the second diverges to NaN: it is marked FAILED, the first one still finishes."""
    sweep = tmp_path / "sweep"
    out = run_gan(["train", "-m", *TINY, "optimizer=sgd", "optimizer.generator.lr=0.01,1e30",
                   "optimizer.discriminator.lr=0.01", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]  # after all jobs ran, naming the failed one
    assert (sweep / "0" / "DONE").is_file() and not (sweep / "0" / "FAILED").exists()
    assert (sweep / "1" / "FAILED").is_file() and not (sweep / "1" / "DONE").exists()
    assert "non-finite" in (sweep / "1" / "FAILED").read_text()
    assert "error: job 1 failed: training stopped: non-finite" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 jobs of ")
    assert "failed: 1: UserError: training stopped: non-finite" in out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr
