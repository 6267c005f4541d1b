"""`train(cfg)` in-process on tiny configs: every loss, the maxout model, latent options,
weight clipping, determinism and exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import TINY, compose
from gan_cli.job.train import train


@pytest.mark.parametrize("loss", ["gan", "nsgan", "mlgan", "lsgan", "wgan", "wgan_gp", "hinge"])
def test_every_loss_trains(tmp_path, loss):
    result = train(compose([*TINY, f"loss={loss}", "train.steps=10", "train.eval_every=10"]), tmp_path)
    assert result["step"] == 10
    for key in ("d_loss", "g_loss", "modes", "high_quality", "kl", "js"):
        assert math.isfinite(result[key]), key


def test_maxout_discriminator_uniform_latent_and_label_smoothing(tmp_path):
    cfg = compose([*TINY, "model=maxout", "latent.distribution=uniform", "latent.dim=3",
                   "loss=gan", "loss.label_smoothing=0.9", "train.n_critic=2", "train.n_gen=2"])
    result = train(cfg, tmp_path)
    assert result["step"] == 20 and math.isfinite(result["d_loss"])
    resolved = (tmp_path / "resolved_config.yaml").read_text()
    assert "activation: maxout" in resolved and "dim: 3" in resolved


def _weights(run_dir):
    import h5py

    out = {}
    with h5py.File(sorted((run_dir / "checkpoints").glob("*.h5"))[-1], "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return {k: v for k, v in out.items() if k.startswith(("g/", "d/", "g_opt/", "d_opt/"))}


def test_wgan_clips_every_critic_weight(tmp_path):
    train(compose([*TINY, "loss=wgan", "loss.clip_value=0.02"]), tmp_path)
    critic = [v for k, v in _weights(tmp_path).items() if k.startswith("d/")]
    assert critic and max(float(np.abs(v).max()) for v in critic) <= 0.02 + 1e-7


def test_deterministic_runs_are_identical(tmp_path):
    cfg = compose([*TINY, "train.deterministic=true"])
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])


def test_resume_matches_uninterrupted(tmp_path):
    straight = train(compose([*TINY, "train.deterministic=true"]), tmp_path / "straight")
    half = compose([*TINY, "train.deterministic=true", "train.steps=10"])
    train(half, tmp_path / "resumed")
    resumed = train(compose([*TINY, "train.deterministic=true"]), tmp_path / "resumed", resume=True)
    assert {k: v for k, v in straight.items() if k != "time"} == {k: v for k, v in resumed.items() if k != "time"}
    ws, wr = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for k in ws:
        np.testing.assert_array_equal(ws[k], wr[k])
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]
