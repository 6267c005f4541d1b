"""train.logger=mlflow with MLflow's file store: params, metrics per evaluation, report and generator."""

from __future__ import annotations

import pytest

from conftest import TINY, compose

mlflow = pytest.importorskip("mlflow")


def test_mlflow_logs_params_metrics_report_and_generator(tmp_path, monkeypatch):
    from gan_cli.job.train import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # also for the client below
    run_dir = tmp_path / "run"
    train(compose([*TINY, "train.report=true", "train.logger=mlflow", "loss=wgan"]), run_dir)
    assert (tmp_path / "mlruns").is_dir()  # the embedded default store

    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("gan-cli")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["loss.name"] == "wgan" and run.data.params["optimizer.name"] == "rmsprop"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "d_loss")] == [10, 20]
    assert "modes" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "resolved_config.yaml", "generator.keras", "report"} <= artifacts


def test_mlflow_logger_is_validated(monkeypatch):
    from gan_cli.config.resolve import validate
    from gan_cli.core.errors import ConfigError

    with pytest.raises(ConfigError, match="train.logger 'wandb' unknown; valid: null, mlflow"):
        validate(compose([*TINY, "train.logger=wandb"]))
