"""Scaling out (docs/scaling.md): joblib sweeps, Optuna searches, submitit, tf.distribute.

Sweeps run through ``gan_cli.cli.main.main`` in this process (the joblib and submitit jobs themselves
run in processes of their own); the mirrored-vs-one-device comparison needs a CPU split into two
logical devices before TensorFlow starts, so it runs in a subprocess.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY

SRC = str(Path(__file__).resolve().parent.parent)


def gan(*args: str) -> int:
    """``gan ARGS`` in this process; returns the exit status."""
    from gan_cli.cli.main import main

    try:
        return main(list(args))
    except SystemExit as exc:  # Hydra ends failed runs with SystemExit
        return int(exc.code or 0)


def checkpoint_arrays(path) -> dict:
    """Every array of a checkpoint by its name (``g/dense/kernel``, ``d_opt/iteration``, ...)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def last_row(run_dir: Path) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def overrides(run_dir: Path) -> dict[str, str]:
    items = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    return dict(o.split("=", 1) for o in items)


def test_joblib_sweep_runs_each_job_in_its_own_process(tmp_path, capfd):
    sweep = tmp_path / "sweep"
    assert gan("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "train.seed=0,1", *TINY,
               f"hydra.sweep.dir={sweep}") == 0
    captured = capfd.readouterr()
    assert "Joblib.Parallel(n_jobs=2" in captured.out + captured.err
    for job in ("0", "1"):
        assert (sweep / job / "DONE").is_file() and not (sweep / job / "FAILED").exists()
        assert last_row(sweep / job)["step"] == 20
    assert overrides(sweep / "1")["train.seed"] == "1"
    # different seeds, different runs (each job trained its own config)
    assert last_row(sweep / "0")["d_loss"] != last_row(sweep / "1")["d_loss"]
    assert gan("sweep-report", str(sweep)) == 0
    table = [line for line in (sweep / "sweep_report.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 3 and all("| done |" in row for row in table[1:])


def test_a_sigterm_to_a_joblib_sweep_stops_its_job_with_a_checkpoint(tmp_path):
    """A joblib job trains in a child process (forked from the sweep's process where that is safe:
    gan_cli.cli.job_process); a SIGTERM sent to the sweep's process alone is passed on to it, so the job
    stops after its current compiled call with a checkpoint and a resume hint, and the sweep ends 143
    without starting its next job."""
    import os
    import signal
    import time

    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "gan_cli.cli.main", "train", "-m", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=1", "train.seed=0,1", *TINY, "train.steps=100000",
                             "train.steps_per_execution=10", f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((sweep / "0" / "checkpoints").glob("*.h5")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-3000:]
    step = int(err.split("interrupted (SIGTERM) at step ")[1].split(";")[0])
    assert (sweep / "0" / "checkpoints" / f"ckpt_{step:08d}.h5").is_file()
    assert f"Continue with: gan resume {sweep / '0'}" in err and "Traceback" not in err
    assert not (sweep / "1").exists()


def test_fresh_process_hands_back_its_error(tmp_path):
    """A joblib job's training process hands an error back as the same exception class with its
    one-line message (the job is then marked FAILED by hydra_app)."""
    from omegaconf import open_dict

    from conftest import compose
    from gan_cli.core.errors import ConfigError
    from gan_cli.cli.job_process import train_in_fresh_process

    cfg = compose(TINY)
    with open_dict(cfg):
        cfg.train.on_nan = "bogus"  # past the command line's checks; train() rejects it
    with pytest.raises(ConfigError, match=r"^train.on_nan 'bogus' unknown; valid: stop, rollback$"):
        train_in_fresh_process(cfg, tmp_path / "bad")


def test_objective_returned_to_optuna_is_the_logged_metric(tmp_path, monkeypatch):
    sweep = tmp_path / "search"
    assert gan("train", "-m", "hparams_search=toy2d_optuna", "dataset=ring", "metrics.objective=kl",
               "hydra.sweeper.n_trials=2", *TINY, f"hydra.sweep.dir={sweep}") == 0
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and set(result["best_params"]) == {
        "loss", "train.n_critic", "model.pack", "optimizer.generator.lr", "optimizer.discriminator.lr"}
    jobs = [sweep / "0", sweep / "1"]
    assert all((j / "DONE").is_file() for j in jobs)
    values = [last_row(j)["kl"] for j in jobs]
    # the value Optuna saw is the final kl of metrics.jsonl, and it kept the smaller one
    assert result["best_value"] == min(values)
    best = jobs[int(np.argmin(values))]
    for key, value in result["best_params"].items():
        got = overrides(best)[key]
        assert got == str(value) or math.isclose(float(got), float(value)), key
    # seeded TPE: the trials' parameters differ from each other and lie in the search space
    first, second = overrides(jobs[0]), overrides(jobs[1])
    assert first["loss"] in ("nsgan", "lsgan", "hinge", "wgan_gp") and first != second
    assert 5e-5 <= float(first["optimizer.generator.lr"]) <= 2e-3
    assert gan("sweep-report", str(sweep)) == 0
    report = (sweep / "sweep_report.md").read_text()
    assert f"Optuna search: best kl = {result['best_value']:.4g} (job {best.name})" in report
    assert "sorted by `kl`" in report
    # a trial re-runs as one run of its sampled config (not as a new search)
    monkeypatch.chdir(tmp_path)
    assert gan("reproduce", str(best)) == 0
    again = next((tmp_path / "outputs").glob("*/*_reproduce"))
    assert overrides(again)["loss"] == overrides(best)["loss"] and last_row(again)["step"] == 20
    assert not (sweep / "2").exists()


def test_search_space_is_checked_before_any_job(capsys):
    """Every value of hydra.sweeper.params is composed and validated up front (one line, exit 2)."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    from gan_cli.cli.hydra_callbacks import RunChecks

    with initialize_config_module("gan_cli.conf", version_base="1.3"):
        for search in ("toy2d_optuna", "csm_optuna"):  # the shipped search spaces pass the checks
            cfg = compose("config", overrides=[f"hparams_search={search}"], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            RunChecks().on_multirun_start(cfg, config_name="config")
    assert gan("train", "hparams_search=toy2d_optuna", "hydra.sweeper.params.loss='choice(nsgan,nope)'") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hydra.sweeper.params loss=nope" in err and "Could not find 'loss/nope'" in err
    # an interval stands for its ends: a float range for an integer key cannot work
    assert gan("train", "-m", "hparams_search=toy2d_optuna", "train.batch_size=interval(16,64)") == 2
    assert "train.batch_size must be an integer, got 16.0" in capsys.readouterr().err
    assert gan("train", "hparams_search=nope") == 2
    assert "Available options in 'hparams_search': csm_optuna toy2d_optuna" in capsys.readouterr().err


def test_unknown_objective_and_strategy_are_one_line_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert gan("train", *TINY, "train.strategy=bogus", f"hydra.run.dir={run}") == 2
    err = capsys.readouterr().err
    assert err == "error: train.strategy 'bogus' unknown; valid: none, mirrored, multiworker\n"
    assert not run.exists()
    assert gan("train", *TINY, "metrics.objective=nope", f"hydra.run.dir={run}") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: metrics.objective 'nope' is not a metric of dataset 'ring'; valid: d_loss")


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    assert gan("train", "-m", "hydra/launcher=submitit_local", "train.seed=0,1", *TINY,
               f"hydra.sweep.dir={sweep}") == 0
    for job in ("0", "1"):
        assert (sweep / job / "DONE").is_file() and last_row(sweep / job)["step"] == 20
    logs = list((sweep / ".submitit").glob("*/*_log.err"))
    assert len(logs) == 2
    assert gan("sweep-report", str(sweep)) == 0
    report = (sweep / "sweep_report.md").read_text()
    assert "Launched with submitit" in report and report.count("| done |") == 2


# One-device vs mirrored runs of the same global batch, in a process whose CPU is split into two
# logical devices. Printed: for each case the largest |difference| over every weight and optimizer
# variable after the run, and the largest |value| (the scale).
MIRRORED = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from hydra import compose, initialize_config_module
    from gan_cli.core.errors import ConfigError
    from gan_cli.job.train import train
    import h5py

    def checkpoint_arrays(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out

    root, cases = sys.argv[1], json.loads(sys.argv[2])
    base = ["train.steps=4", "train.eval_every=4", "train.checkpoint_every=4", "train.batch_size=32",
            "metrics.num_samples=200", "train.progress=false", "dataset.num_samples=2000", "train.report=false"]

    def run(name, strategy, extra):
        chosen = {o.split("=")[0]: o for o in base + extra + [f"train.strategy={strategy}"]}  # later wins
        with initialize_config_module("gan_cli.conf", version_base="1.3"):
            cfg = compose("config", overrides=list(chosen.values()))
        train(cfg, f"{root}/{name}_{strategy}")
        return checkpoint_arrays(f"{root}/{name}_{strategy}/checkpoints/ckpt_00000004.h5")

    out = {"replicas": len(tf.config.list_logical_devices("CPU"))}
    for name, extra in cases.items():
        one, two = run(name, "none", extra), run(name, "mirrored", extra)
        out[name] = {"diff": max(float(np.abs(one[k] - two[k]).max()) for k in one),
                     "scale": max(float(np.abs(one[k]).max()) for k in one if k.startswith(("g/", "d/"))),
                     "clipped": float(max(np.abs(two[k]).max() for k in two if k.startswith("d/")))}
    try:  # 33 rows cannot be split across 2 replicas
        run("odd", "mirrored", ["train.batch_size=33"])
    except ConfigError as exc:
        out["odd_batch"] = str(exc)
    print("RESULT " + json.dumps(out))
""")


def mirrored_vs_single(tmp_path, cases: dict[str, list[str]]) -> dict:
    import os

    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path), json.dumps(cases)], capture_output=True,
                         text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_mirrored_training_matches_one_device(tmp_path):
    """2 replicas x 16 rows = one device x 32 rows: same weights and optimizer state after 4 rounds
    (float32 round-off only): the batch split, the per-replica noise slices, the 1/R gradient scaling
    and the weight clipping on every replica copy are all exact. WGAN with clipping uses plain SGD
    (Adam/RMSprop divide by sqrt(v) and amplify round-off where a gradient is ~0)."""
    res = mirrored_vs_single(tmp_path, {
        "nsgan": ["loss=nsgan"],
        "wgan": ["loss=wgan", "train.n_critic=2", "optimizer=sgd", "optimizer.generator.lr=0.01",
                 "optimizer.discriminator.lr=0.01"],
    })
    assert res["replicas"] == 2
    for name in ("nsgan", "wgan"):
        assert res[name]["diff"] <= 1e-5 * max(1.0, res[name]["scale"]), (name, res[name])
    assert res["wgan"]["clipped"] <= 0.01 + 1e-7  # every critic weight clipped into [-0.01, 0.01]
    assert res["odd_batch"].startswith("train.batch_size=33 must be a multiple of 2 (2 replicas)")


@pytest.mark.slow
def test_mirrored_gradient_penalty_and_packing_match_one_device(tmp_path):
    res = mirrored_vs_single(tmp_path, {
        "wgan_gp": ["loss=wgan_gp", "train.n_critic=2", "optimizer=sgd", "optimizer.generator.lr=0.01",
                    "optimizer.discriminator.lr=0.01"],
        "pack": ["loss=wgan_gp", "model=mlp", "model.pack=2", "train.n_critic=1", "optimizer=sgd",
                 "optimizer.generator.lr=0.01", "optimizer.discriminator.lr=0.01"],
    })
    for name in ("wgan_gp", "pack"):
        assert res[name]["diff"] <= 1e-5 * max(1.0, res[name]["scale"]), (name, res[name])


def test_bad_tf_config_is_a_config_error(monkeypatch):
    from gan_cli.training import distribute
    from gan_cli.core.errors import ConfigError

    monkeypatch.setattr(distribute, "_CACHE", {})
    for bad in ("{not json", '{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
                '{"cluster": {"worker": ["h:1"]}}'):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ConfigError, match="^TF_CONFIG is not valid for train.strategy=multiworker; set it to JSON"):
            distribute.make_strategy("multiworker")


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_local_workers_match_one_device(tmp_path):
    """train.strategy=multiworker with two worker processes on this machine (TF_CONFIG on localhost):
    both workers end with the weights of a one-device run of the same global batch."""
    import os

    args = ["train", *TINY, "train.steps=4", "train.eval_every=4", "train.checkpoint_every=4", "loss=wgan",
            "train.n_critic=2", "optimizer=sgd", "optimizer.generator.lr=0.01", "optimizer.discriminator.lr=0.01"]
    cluster = [f"localhost:{p}" for p in free_ports(2)]
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen([sys.executable, "-m", "gan_cli.cli.main", *args, "train.strategy=multiworker",
                                       f"hydra.run.dir={tmp_path / f'w{i}'}"], env=env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "train.strategy: multiworker, 2 replica(s)" in err
    assert gan(*args, f"hydra.run.dir={tmp_path / 'one'}") == 0
    one = checkpoint_arrays(tmp_path / "one" / "checkpoints" / "ckpt_00000004.h5")
    for i in range(2):
        two = checkpoint_arrays(tmp_path / f"w{i}" / "checkpoints" / "ckpt_00000004.h5")
        assert set(two) == set(one)
        for key in one:
            np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-6, err_msg=key)
