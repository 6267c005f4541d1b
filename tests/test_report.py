"""Run reports (report.html + report/*.png), sweep reports and the TensorBoard callback.

Runs are produced in this process with ``gan_cli.job.train.train`` on tiny configs; the sweep's job
folders are built by hand (two trained jobs, one FAILED, one still running) as Hydra would.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, compose
from gan_cli.metrics import evaluator_for
from gan_cli.core.errors import UserError

SMALL_CSM = ["loss=wgan", "dataset=csm", "model=csm_mlp", "dataset.array=minidsp_uma-16", "dataset.num_samples=64",
             "dataset.eval_samples=16", "dataset.eval_grid=11", "model.generator.hidden=[32,32]",
             "model.discriminator.filters=[8,16]", "train.steps=10", "train.eval_every=5",
             "train.checkpoint_every=10", "train.batch_size=16", "metrics.num_samples=32", "train.progress=false"]
TINY_CGAN = ["dataset=digits", "model=dcgan", "model.conditional=true", "train.steps=20", "train.eval_every=10",
             "train.checkpoint_every=20", "train.batch_size=32", "metrics.num_samples=200", "train.progress=false",
             "latent.dim=16", "model.generator.base_channels=8", "model.discriminator.base_channels=8"]

COMMON = ["config", "final-metrics", "losses", "metrics"]
SECTIONS = {"toy2d": ["samples", "discriminator", "manifold", "gradients", "kl-js", "animation"],
            "csm": ["eigenvalues", "beamforming", "source-count"],
            "image": ["evolution", "final-grid", "per-class"]}
DATA_URI = re.compile(r'src="data:image/(png|gif);base64,([A-Za-z0-9+/=]+)"')


def train_run(overrides: list[str], run_dir: Path) -> Path:
    from gan_cli.job.train import train

    train(compose(overrides), run_dir)
    return run_dir


def sections_of(page: str) -> dict[str, str]:
    """``{section id: its HTML}``."""
    parts = re.split(r'<section id="([^"]+)">', page)
    return {parts[i]: parts[i + 1].split("</section>")[0] for i in range(1, len(parts), 2)}


def check_report(run_dir: Path, kind: str) -> dict[str, str]:
    """The report of ``run_dir`` has every section of its kind, each with a decodable image."""
    from gan_cli.report import write_report

    t0 = time.time()
    path = write_report(run_dir)
    elapsed = time.time() - t0
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # opens offline
    secs = sections_of(page)
    for sid in COMMON + SECTIONS[kind]:
        assert sid in secs, f"section {sid} missing from the {kind} report"
        if sid != "config" and sid != "final-metrics":
            assert DATA_URI.search(secs[sid]), f"section {sid} has no embedded image"
    images = DATA_URI.findall(page)
    assert len(images) >= len(COMMON) - 2 + len(SECTIONS[kind])
    for fmt, b64 in images:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert im.format.lower() == fmt
            im.load()
            if fmt == "gif":
                assert im.n_frames >= 2
    pngs = sorted(p.name for p in (run_dir / "report").glob("*.png"))
    assert len(pngs) >= len(images) - (1 if kind == "toy2d" else 0)
    print(f"{kind} report: {len(images)} images, {path.stat().st_size / 1e6:.2f} MB, {elapsed:.1f}s")
    return secs


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    return train_run(TINY + ["dataset=ring"], tmp_path_factory.mktemp("ring") / "run")


@pytest.fixture(scope="module")
def csm_run(tmp_path_factory):
    return train_run(SMALL_CSM, tmp_path_factory.mktemp("csm") / "run")


# ------------------------------------------------------------------------------------ run reports
def test_toy2d_snapshots_hold_the_discriminator_manifold_and_gradients(ring_run):
    with np.load(ring_run / "samples" / "step_00000020.npz") as f:
        assert f["d_logits"].shape == (60, 60) and np.isfinite(f["d_logits"]).all()
        assert f["d_grid_x"].shape == f["d_grid_y"].shape == (60,)
        assert f["manifold"].shape == (21, 21, 2)
        assert f["fake_grad"].shape == f["fake"].shape and np.abs(f["fake_grad"]).sum() > 0


def test_snapshot_extras_are_cheap(ring_run):
    from gan_cli.run.load import load_for_inference

    from gan_cli.callbacks.snapshots import snapshot_extras

    _, data, gan = load_for_inference(ring_run)
    fake, _ = gan.sample(1000, seed=0)
    snapshot_extras(data, gan, fake)           # warm-up
    t0 = time.perf_counter()
    for _ in range(5):
        snapshot_extras(data, gan, fake)
    assert (time.perf_counter() - t0) / 5 < 0.1


def test_ring_report_has_every_2d_section(ring_run):
    secs = check_report(ring_run, "toy2d")
    assert "train.steps=20" in secs["config"] or "no .hydra/overrides.yaml" in secs["config"]
    assert "step 20" in secs["final-metrics"] and "modes" in secs["final-metrics"]
    assert (ring_run / "report" / "toy2d_training.gif").is_file()


def test_report_shows_hydra_overrides(ring_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ring_run, run)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("- dataset=ring\n- train.steps=20\n")
    from gan_cli.report import write_report

    secs = sections_of(write_report(run).read_text())
    assert "train.steps=20" in secs["config"] and "resolved_config.yaml" in secs["config"]


def test_csm_report_has_every_csm_section(csm_run):
    secs = check_report(csm_run, "csm")
    assert "spectrum_db" in secs["final-metrics"]


def test_conditional_image_report_has_every_image_section(tmp_path):
    run = train_run(TINY_CGAN, tmp_path / "digits")
    check_report(run, "image")


def test_missing_or_empty_run_folder_is_a_one_line_user_error(tmp_path):
    from gan_cli.report import write_report, write_sweep_report

    for bad in (tmp_path / "nope", tmp_path):
        with pytest.raises(UserError) as exc:
            write_report(bad)
        assert "\n" not in str(exc.value) and str(bad) in str(exc.value)
    (tmp_path / "resolved_config.yaml").write_text("train: {steps: 1}\n")
    with pytest.raises(UserError, match="no metrics yet"):
        write_report(tmp_path)
    with pytest.raises(UserError, match="no job folders"):
        write_sweep_report(tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        write_sweep_report(tmp_path / "nope")


# ------------------------------------------------------------------------------------ sweep report
def _job(root: Path, num: int, overrides: list[str], marker: str | None, src: Path | None = None) -> Path:
    job = root / str(num)
    if src is not None:
        shutil.copytree(src, job)
    job.mkdir(parents=True, exist_ok=True)
    (job / ".hydra").mkdir(exist_ok=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if marker == "DONE":
        (job / "DONE").write_text("ok\n")
    elif marker == "FAILED":
        (job / "FAILED").write_text("ConfigError: optimizer.generator.lr must be > 0\n")
    return job


def test_sweep_report_lists_every_job_with_its_overrides(ring_run, tmp_path):
    from gan_cli.report import write_sweep_report

    root = tmp_path / "multirun"
    seed1 = train_run(TINY + ["dataset=ring", "train.seed=1"], tmp_path / "seed1")
    _job(root, 0, ["train.seed=0", *TINY], "DONE", ring_run)
    _job(root, 1, ["train.seed=1", *TINY], "DONE", seed1)
    _job(root, 2, ["train.seed=2", *TINY], "FAILED")
    running = _job(root, 3, ["train.seed=3", *TINY], None, seed1)
    (running / "report.html").unlink(missing_ok=True)

    paths = write_sweep_report(root, sort="kl")
    md = paths["markdown"].read_text()
    print(md)
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert "train.seed" in header and "kl" in header
    assert len(rows) == 4
    by_job = {r.split("|")[1].strip(): r for r in rows}
    assert set(by_job) == {"0", "1", "2", "3"}
    for j in "0123":
        assert by_job[j].split("|")[3].strip() == j            # the train.seed column
    assert "failed" in by_job["2"] and "running" in by_job["3"] and "done" in by_job["0"]
    assert "Common overrides" in md and "train.steps=20" in md
    # sorted by kl, ascending; the failed job (no metrics) last
    kls = [json.loads((root / j / "metrics.jsonl").read_text().splitlines()[-1])["kl"] for j in ("0", "1", "3")]
    assert rows[-1].split("|")[1].strip() == "2"
    shown = [float(r.split("|")[header.split("|").index(" kl ")].strip()) for r in rows[:3]]
    assert shown == sorted(shown) and len(kls) == 3

    with open(paths["csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert [t["job"] for t in table][-1] == "2" and {t["status"] for t in table} == {"done", "failed", "running"}
    page = paths["html"].read_text()
    assert "<table>" in page and all(f"<td>{j}</td>" in page for j in "0123")
    for _, b64 in DATA_URI.findall(page):
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            im.load()
    assert paths["png"].is_file()

    with pytest.raises(UserError, match="--sort nope"):
        write_sweep_report(root, sort="nope")
    assert "sorted by `modes`" in write_sweep_report(root)["markdown"].read_text()   # default: primary metric


# ------------------------------------------------------------------------------------ TensorBoard
def test_tensorboard_callback_writes_losses_metrics_and_images(tmp_path):
    import tensorflow as tf

    from gan_cli.config import resolve as config_mod
    from gan_cli.callbacks.monitor import RunMonitor
    from gan_cli.report import TensorBoardCallback
    from gan_cli.data.build import build_dataset
    from gan_cli.training.build import build_gan

    cfg = compose(TINY + ["dataset=ring", "train.steps_per_execution=5"])
    data = build_dataset(cfg.dataset)
    cfg = config_mod.resolve(cfg, data)
    gan = build_gan(cfg, data)
    run = tmp_path / "run"
    run.mkdir()
    monitor = RunMonitor(gan, data, cfg, run, evaluator_for(data, 200, 0), None)
    tb = TensorBoardCallback(run, data, monitor)
    gan.fit(data.tf_dataset(32, 0), epochs=2, steps_per_epoch=10, verbose=0, shuffle=False, callbacks=[monitor, tb])
    tb.close()
    tags: dict[str, set] = {}
    for f in (run / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            for v in event.summary.value:
                tags.setdefault(v.tag, set()).add(event.step)
    assert tags["loss/d_loss"] == tags["loss/g_loss"] == {5, 10, 15, 20}  # every compiled call (5 rounds)
    pytest.importorskip("tensorboard")
    assert "_hparams_/session_start_info" in tags  # the config in TensorBoard's HParams tab
    assert tags["metrics/kl"] == {10, 20} and "metrics/js" in tags
    assert tags["samples"] == {10, 20}


# ------------------------------------------------------------------------------------ background report
def test_background_report_is_complete_when_its_marker_is_gone(ring_run, tmp_path):
    """``gan train``'s report process: report.pending while it draws, report.html complete once it is gone."""
    from gan_cli.report import background

    run = tmp_path / "run"
    shutil.copytree(ring_run, run)
    (run / "report.html").unlink(missing_ok=True)
    pid = background.start(run)
    assert (run / "report.pending").read_text().strip() == str(pid) and background.pending(run)
    assert background.wait(run, timeout=300)
    assert not (run / "report.pending").exists()
    assert "modes" in (run / "report.html").read_text() and "report:" in (run / "report.log").read_text()
    assert {"toy2d_samples.png", "toy2d_training.gif"} <= {p.name for p in (run / "report").iterdir()}


def test_background_report_failure_says_how_to_redo_it(tmp_path):
    from gan_cli.report import background

    run = tmp_path / "run"
    run.mkdir()  # no resolved_config.yaml or metrics: write_report fails with a UserError
    background.start(run)
    assert background.wait(run, timeout=120)
    log = (run / "report.log").read_text()
    assert "could not write the report" in log and f"gan report {run}" in log and "Traceback" not in log
    assert not (run / "report.pending").exists()


def test_a_marker_left_by_a_dead_worker_is_not_waited_for(tmp_path):
    import subprocess

    from gan_cli.report import background

    proc = subprocess.Popen(["true"])
    proc.wait()
    (tmp_path / "report.pending").write_text(f"{proc.pid}\n")
    assert not background.pending(tmp_path) and background.wait(tmp_path, timeout=1)


def test_which_runs_draw_their_report_in_the_background(tmp_path):
    """train.report=true: after DONE, by its own process; with train.logger=mlflow (which uploads the report when
    training ends) before training returns; train(report_later=True) leaves it to the caller."""
    from gan_cli.report import background

    assert background.in_background(compose(TINY + ["train.report=true"]))
    assert not background.in_background(compose(TINY))  # TINY: train.report=false
    assert not background.in_background(compose(TINY + ["train.report=true", "train.logger=mlflow"]))
    from gan_cli.job.train import train

    run = tmp_path / "run"
    train(compose(TINY + ["train.report=true", "train.steps=10"]), run, report_later=True)
    assert (run / "metrics.jsonl").is_file() and not (run / "report.html").exists()

