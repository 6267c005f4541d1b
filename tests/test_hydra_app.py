"""`gan train` is Hydra's own app: Hydra's flags, the override grammar, user config folders, the
dataset/loss defaults that pick model and optimizer, and the run-folder rules."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import yaml

from conftest import TINY, rows
from gan_cli.cli.main import main


def gan(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def composed(capsys, *args: str) -> dict:
    """The job config `gan train --cfg job ARGS` prints."""
    capsys.readouterr()
    assert gan("train", "--cfg", "job", *args) == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("args, model, optimizer", [
    ([], "mlp", "adam"),
    (["dataset=digits"], "dcgan", "adam"),
    (["dataset=csm"], None, "adam"),  # its model: the data's recommendation
    (["loss=wgan"], "mlp", "rmsprop"),
    (["loss=wgan_gp"], "mlp", "adam_wgangp"),
    (["loss=wgan", "optimizer=sgd", "dataset=digits", "model=mlp"], "mlp", "sgd"),
    (["experiment=goodfellow2014"], "maxout", "sgd"),
])
def test_dataset_and_loss_pick_model_and_optimizer(capsys, args, model, optimizer):
    cfg = composed(capsys, *args)
    if model is None:
        from gan_cli.data.csm import CsmDataset

        model = CsmDataset.default_model
    assert cfg["model"]["name"] == model and cfg["optimizer"]["name"] == optimizer


def test_overrides_of_the_default_model_and_optimizer_and_the_grammar(capsys):
    cfg = composed(capsys, "model.pack=2", "optimizer.generator.lr=1e-4", "+new_key=1", "~train.g_ema")
    assert cfg["model"]["pack"] == 2 and cfg["optimizer"]["generator"]["lr"] == 1e-4
    assert cfg["new_key"] == 1 and "g_ema" not in cfg["train"]


def test_hydra_flags(capsys):
    capsys.readouterr()
    assert gan("train", "--help") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gan train") and "== Configuration groups ==" in out and "loss: gan" in out
    assert gan("train", "--cfg", "job", "--package", "optimizer", "loss=wgan") == 0
    assert "# @package optimizer" in capsys.readouterr().out
    assert gan("train", "-sc", "install=bash") == 0
    assert "complete -o nospace -o default -F hydra_bash_completion" in capsys.readouterr().out


def test_shell_completion_query(capsys, monkeypatch):
    capsys.readouterr()
    monkeypatch.setenv("COMP_LINE", "gan train dataset=gr")
    assert gan("-sc", "query=bash") == 0
    assert "dataset=grid" in capsys.readouterr().out.split()
    monkeypatch.setenv("COMP_LINE", "gan sa")
    assert gan("-sc", "query=bash") == 0
    assert capsys.readouterr().out.split() == ["sample"]


def test_typo_is_one_line_with_a_hint(capsys):
    capsys.readouterr()
    assert gan("train", "+train.stpes=5") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key train.stpes; did you mean train.steps?" in err


def test_user_config_dir_and_searchpath(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "experiment").mkdir(parents=True)
    (mine / "dataset").mkdir()
    (mine / "experiment" / "tiny.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /dataset: my_ring
        train: {seed: 7}
        """))
    (mine / "dataset" / "my_ring.yaml").write_text(textwrap.dedent("""\
        defaults:
          - /model@_global_.model: maxout
          - _self_
        _target_: gan_cli.data.toy2d.Toy2D
        name: ring
        num_samples: 2000
        """))
    for flags in (["--config-dir", str(mine)], [f"hydra.searchpath=[file://{mine}]"]):
        cfg = composed(capsys, *flags, "experiment=tiny")
        assert cfg["train"]["seed"] == 7 and cfg["dataset"]["num_samples"] == 2000 and cfg["model"]["name"] == "maxout"
    run = tmp_path / "run"
    assert gan("train", "--config-dir", str(mine), "experiment=tiny", *TINY[:-2], "train.report=false",
               f"hydra.run.dir={run}") == 0
    assert [r["step"] for r in rows(run)] == [10, 20]


def test_existing_run_folder_needs_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert gan("train", *TINY, "train.steps=10", "train.eval_every=10", f"hydra.run.dir={run}") == 0
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert gan("train", *TINY, f"hydra.run.dir={run}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not empty" in err and "train.overwrite=true" in err
    assert (run / "metrics.jsonl").read_text() == before
    assert gan("train", *TINY, "train.overwrite=true", f"hydra.run.dir={run}") == 0
    assert [r["step"] for r in rows(run)] == [10, 20]  # replaced, no duplicate rows
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt_00000010.h5", "ckpt_00000020.h5"]


def test_sweep_checks_every_job_first(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    capsys.readouterr()
    assert gan("train", "-m", *TINY, "train.n_critic=1,0", f"hydra.sweep.dir={sweep}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "job train.n_critic=0: train.n_critic must be >= 1" in err
    assert not sweep.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_help_and_info_do_not_import_tensorflow(tmp_path):
    """gan train --help and --info compose the config without importing TensorFlow."""
    import subprocess

    outputs = []
    for flags in (["--help"], ["--info", "defaults"]):
        code = (f"import sys\nfrom gan_cli.cli.main import main\ntry:\n    main(['train', *{flags!r}])\n"
                "finally:\n    assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ})
        assert out.returncode == 0, out.stderr[-2000:]
        outputs.append(out.stdout + out.stderr)
    assert "== Config ==" in outputs[0]
    assert "optimizer/adam" in outputs[1]  # --info defaults: the optimizer chosen by the loss config
