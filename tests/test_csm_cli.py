"""The main job's path end to end from the CLI: `gan data csm`, `gan train loss=wgan dataset=csm`, sampling
generated CSMs to HDF5 and beamforming them, and bad data files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_gan

# the 16-mic array and a tiny set keep a real CLI run to seconds
SMALL_CSM = ["dataset.array=minidsp_uma-16", "dataset.num_samples=64", "dataset.eval_samples=16",
             "dataset.eval_grid=11", "model.generator.hidden=[32,32]", "model.discriminator.filters=[8,16]"]
TINY_RUN = ["train.steps=10", "train.eval_every=5", "train.checkpoint_every=10", "train.batch_size=16",
            "metrics.num_samples=32", "train.progress=false"]


@pytest.fixture(scope="module")
def csm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("csm_run")
    run_dir = root / "run"
    out = run_gan(["train", "loss=wgan", "dataset=csm", "model=csm_mlp", *SMALL_CSM, *TINY_RUN,
                   f"hydra.run.dir={run_dir}"], cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    from gan_cli.report import background

    assert background.wait(run_dir, timeout=300)  # the report is drawn in the background after DONE
    return run_dir, out


def test_train_wgan_on_csm_logs_every_csm_metric(csm_run):
    run_dir, out = csm_run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10]
    for key in ("psd_rate", "spectrum_db", "source_count_dist", "orthonormality_error", "peak_w1", "c2st", "c2st_floor",
                "peak_level_dist"):
        assert rows[-1][key] is not None and np.isfinite(rows[-1][key]), key
    assert 0.0 <= rows[-1]["psd_rate"] <= 1.0
    resolved = (run_dir / "resolved_config.yaml").read_text()
    # seed 000's WGAN settings are what loss=wgan resolves to
    assert "clip_value: 0.01" in resolved and "n_critic: 5" in resolved and "lr: 5.0e-05" in resolved
    assert "done: step 10" in out.stderr and "device CPU" in out.stderr
    # the automatic report has the csm sections
    html = (run_dir / "report.html").read_text()
    for section in ("eigenvalues", "beamforming", "source-count"):
        assert f'id="{section}"' in html or f"id={section}" in html, section


def test_sampled_csms_are_written_beamformable(csm_run, tmp_path):
    from gan_cli.data.csm_io import read_csm_file
    from gan_cli.metrics.csm import MapBeamformer, psd_rate

    run_dir, _ = csm_run
    path = tmp_path / "gen.h5"
    out = run_gan(["sample", str(run_dir), "-n", "6", "-o", str(path)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    d = read_csm_file(path)
    assert d.csm.shape == (6, 16, 16) and d.mic_positions.shape == (16, 3)
    # eigenvectors representation: C = V diag(mean real spectrum) V^H is Hermitian PSD by construction
    assert psd_rate(d.csm, tol=1e-4) == 1.0
    np.testing.assert_allclose(d.csm, np.conj(np.swapaxes(d.csm, -1, -2)), atol=1e-5)
    bf = MapBeamformer(d.mic_positions, d.attrs["frequency"], d.attrs["reference_mic"], extent=0.5, z=0.5,
                       grid_points=11)
    maps = bf.maps(d.csm)
    assert maps.shape == (6, 121) and np.all(np.isfinite(maps))


def test_data_command_writes_file_and_refuses_to_overwrite(tmp_path):
    from gan_cli.data.csm_io import read_csm_file

    path = tmp_path / "sim.h5"
    args = ["data", "csm", "-o", str(path), "dataset.array=minidsp_uma-16", "num_samples=20", "mode=analytic"]
    out = run_gan(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "wrote" in out.stdout and read_csm_file(path).csm.shape == (20, 16, 16)
    out = run_gan(args, cwd=tmp_path)
    assert out.returncode == 2 and "--force" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("content", [None, b"", b"\x89HDF\r\n\x1a\n truncated", b"not a csm file at all"])
def test_missing_or_corrupt_data_file_is_one_line_exit_2(tmp_path, content):
    path = tmp_path / "data.h5"
    if content is not None:
        path.write_bytes(content)
    run_dir = tmp_path / "run"
    out = run_gan(["train", "dataset=csm", f"dataset.path={path}", *TINY_RUN, f"hydra.run.dir={run_dir}"],
                  cwd=tmp_path, timeout=180)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr, out.stderr
    assert str(path.name) in lines[0]
    assert not (run_dir / "checkpoints").exists()


def test_wrongly_typed_simulation_key_names_the_key(tmp_path):
    run_dir = tmp_path / "run"
    out = run_gan(["train", "dataset=csm", "dataset.snapshots=abc", *TINY_RUN, f"hydra.run.dir={run_dir}"],
                  cwd=tmp_path, timeout=180)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "dataset.snapshots='abc' must be an integer" in lines[0]
    assert not (run_dir / "checkpoints").exists()
