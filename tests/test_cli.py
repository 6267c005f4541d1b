"""The `gan` command end to end on tiny configs: train, sample, evaluate, sweeps, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY, run_gan


def test_help_lists_subcommands_without_importing_tensorflow():
    code = ("import sys; from gan_cli.cli.main import main; main(['--help']); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported by --help'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for sub in ("train", "sample", "evaluate", "resume", "data"):
        assert sub in out.stdout


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    """One real `gan train` on a tiny ring config (shared by the sample/evaluate tests)."""
    root = tmp_path_factory.mktemp("ring_run")
    run_dir = root / "run"
    out = run_gan(["train", "loss=wgan", *TINY, "train.report=true", f"hydra.run.dir={run_dir}"], cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    from gan_cli.report import background

    assert background.wait(run_dir, timeout=300)  # the report is drawn in the background after DONE
    return run_dir, out


def test_train_writes_run_folder(ring_run):
    run_dir, out = ring_run
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.jsonl", "resolved_config.yaml"):
        assert (run_dir / name).is_file(), name
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20]
    for key in ("d_loss", "g_loss", "modes", "high_quality", "reverse_kl", "kl", "js"):
        assert key in rows[-1]
    assert 0 <= rows[-1]["high_quality"] <= 1 and 0 <= rows[-1]["modes"] <= 8
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt_00000010.h5", "ckpt_00000020.h5"]
    assert len(list((run_dir / "samples").glob("step_*.npz"))) == 2
    assert "done: step 20" in out.stderr
    # the run report is written after gan train (a background process started after DONE)
    assert (run_dir / "report.html").is_file() and "report:" in out.stderr
    assert not (run_dir / "report.pending").exists() and "report:" in (run_dir / "report.log").read_text()
    assert (run_dir / "DONE").stat().st_mtime <= (run_dir / "report.html").stat().st_mtime  # DONE first
    resolved = (run_dir / "resolved_config.yaml").read_text()
    # loss=wgan resolves to seed 000's recommendations
    assert "name: rmsprop" in resolved and "n_critic: 5" in resolved and "clip_value: 0.01" in resolved


def test_sample_and_evaluate(ring_run, tmp_path):
    run_dir, _ = ring_run
    out = run_gan(["sample", str(run_dir), "-n", "17", "-o", str(tmp_path / "s.npy")], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (17, 2) and np.all(np.isfinite(samples))
    out = run_gan(["sample", str(run_dir), "-n", "5", "-o", str(tmp_path / "s.npy")], cwd=tmp_path)
    assert out.returncode == 2 and "exists" in out.stderr
    out = run_gan(["evaluate", str(run_dir)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert metrics["step"] == 20 and {"modes", "high_quality", "reverse_kl", "kl", "js"} <= set(metrics)
    # the same from the checkpoint file alone
    ckpt = run_dir / "checkpoints" / "ckpt_00000020.h5"
    out = run_gan(["evaluate", str(ckpt)], cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["modes"] == metrics["modes"]


def test_sample_and_evaluate_reject_bad_flags(ring_run, tmp_path):
    run_dir, _ = ring_run
    for args, needle in ((["sample", str(run_dir), "-o", str(tmp_path / "s.npy"), "--seed", "-1"], "--seed must be >= 0"),
                         (["evaluate", str(run_dir), "--num-samples", "1"], "--num-samples must be >= 2")):
        out = run_gan(args, cwd=tmp_path)
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_multirun_two_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_gan(["train", "-m", "train.seed=0,1", *TINY, "train.report=true", f"hydra.sweep.dir={sweep}"],
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for job in ("0", "1"):
        assert (sweep / job / "DONE").is_file()
        assert (sweep / job / "metrics.jsonl").is_file()
        # each job's report was drawn in the background while the sweep went on; the sweep waited for them
        assert (sweep / job / "report.html").is_file() and not (sweep / job / "report.pending").exists()
    assert "train.seed=1" in (sweep / "1" / ".hydra" / "overrides.yaml").read_text()
    out = run_gan(["sweep-report", str(sweep), "--sort", "modes"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 4 and all(f"| {j} " in "\n".join(table) or f"|{j}|" in "\n".join(table) for j in ("0", "1"))
    assert (sweep / "sweep_report.csv").is_file() and (sweep / "sweep_report.html").is_file()


def test_report_command_rewrites_the_report(ring_run, tmp_path):
    run_dir, _ = ring_run
    (run_dir / "report.html").unlink()
    out = run_gan(["report", str(run_dir)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "modes" in html
    out = run_gan(["report", str(tmp_path / "nope")], cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("override,needle", [
    ("loss=nope", "Available options in 'loss'"),
    ("train.foo=1", "train.foo"),
    ("train.n_critic=0", "train.n_critic must be >= 1"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.steps=abc", "train.steps must be an integer"),
    ("optimizer=adam optimizer.generator.lr=-0.1", "optimizer.generator.lr must be > 0"),
    ("optimizer=adam optimizer.generator.lr=null", "optimizer.generator.lr must be set"),
    ("optimizer=sgd optimizer.generator.momentum_final=0.7", "momentum_final and momentum_steps (or momentum_epochs) go together"),
    ("loss.label_smoothing=1.5", "loss.label_smoothing"),
    ("dataset.std=-1", "dataset.std must be > 0"),
    ("+dataset.bogus=3", "unknown key dataset.bogus"),
])
def test_bad_input_one_line_exit_2(tmp_path, override, needle):
    run_dir = tmp_path / "run"
    out = run_gan(["train", *TINY, *override.split(), f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert needle in lines[0]
    assert "Traceback" not in out.stderr
    assert not (run_dir / "checkpoints").exists()


def test_sample_without_checkpoints_is_a_clean_error(tmp_path):
    (tmp_path / "empty_run").mkdir()
    out = run_gan(["sample", str(tmp_path / "empty_run"), "-o", str(tmp_path / "x.npy")], cwd=tmp_path)
    assert out.returncode == 2 and "has no checkpoints" in out.stderr and "Traceback" not in out.stderr


def test_reproduce_exits_1_when_the_metrics_differ(ring_run, tmp_path):
    run_dir, _ = ring_run
    out = run_gan(["reproduce", str(run_dir), "train.seed=1"], cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "final metrics differ" in out.stdout


def test_evaluate_writes_null_for_non_finite_metrics(monkeypatch, capsys):
    """JSON has no Infinity/NaN: such metric values are printed as null."""
    from gan_cli.cli import main as cli

    class Data:
        pass

    class Gan:
        round = type("Round", (), {"numpy": lambda self: 20})()

    monkeypatch.setattr("gan_cli.run.load.load_for_inference", lambda run: (_cfg(), Data(), Gan()))
    monkeypatch.setattr("gan_cli.callbacks.monitor.evaluation_samples", lambda gan, cfg, n: (None, None))
    monkeypatch.setattr("gan_cli.run.checkpoint.latest_checkpoint", lambda run: "ckpt")
    monkeypatch.setattr("gan_cli.metrics.evaluator_for", lambda data, n, seed: lambda fake, labels: {
        "kl": float("inf"), "js": float("nan"), "modes": 3.0})
    assert cli.main(["evaluate", "run"]) == 0
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert printed["kl"] is None and printed["js"] is None and printed["modes"] == 3.0


def _cfg():
    from omegaconf import OmegaConf

    return OmegaConf.create({"metrics": {"num_samples": 10}, "train": {"seed": 0}})
