"""``train.logger=mlflow``: a run's params, metrics, report and exported generator in MLflow.

Needs the optional extra ``pip install "gan-cli[mlflow]"``. The tracking store is ``MLFLOW_TRACKING_URI``
when set (a server, ``sqlite:///mlflow.db``, a folder), else the folder ``mlruns/`` of the working directory
(MLflow's file store; MLflow 3 keeps it in maintenance mode, so ``MLFLOW_ALLOW_FILE_STORE`` defaults to true).
The experiment is ``MLFLOW_EXPERIMENT_NAME`` when set, else ``gan-cli``; the MLflow run is named
after the run folder and tagged with its path.

Logged: the resolved config flattened to params (``loss.name``, ``optimizer.generator.lr``, ...);
every metrics.jsonl row as metrics at its round (losses and quality metrics); at the end the
report (``report.html`` and ``report/``), ``resolved_config.yaml`` and the generator exported by
``gan export`` (``generator.keras``, stock Keras, model space) as artifacts.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import keras

from gan_cli.core.errors import ConfigError


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError('train.logger=mlflow needs MLflow: pip install "gan-cli[mlflow]" (or pip install mlflow), '
                          "or remove train.logger") from None
    return mlflow


class MlflowLogger(keras.callbacks.Callback):
    """Opens an MLflow run at construction; ``finish`` logs the artifacts and ends it."""

    def __init__(self, run_dir: Path, cfg, monitor):
        super().__init__()
        from gan_cli.report.tensorboard import hparams_of

        self.mlflow = _mlflow()
        self.run_dir, self.monitor = Path(run_dir), monitor
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # the folder store MLflow 3 keeps in maintenance mode and asks to opt in to
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self.mlflow.set_tracking_uri(Path("mlruns").resolve().as_uri())
        self.mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "gan-cli")
        self.run = self.mlflow.start_run(run_name=self.run_dir.name, tags={"gan_cli.run_dir": str(self.run_dir)})
        params = {k: str(v)[:6000] for k, v in hparams_of(cfg).items()}
        keys = list(params)
        for i in range(0, len(keys), 100):  # MLflow takes at most 100 params per call
            self.mlflow.log_params({k: params[k] for k in keys[i:i + 100]})
        self.logged_step = -1
        self.active = True

    def log_new_row(self) -> None:
        row = self.monitor.last_row
        if not self.active or not row or row.get("step", -1) == self.logged_step:
            return
        metrics = {k: float(v) for k, v in row.items()
                   if k not in ("step", "time") and isinstance(v, (int, float)) and math.isfinite(float(v))}
        self.mlflow.log_metrics(metrics, step=int(row["step"]))
        self.logged_step = int(row["step"])

    def on_epoch_end(self, epoch, logs=None):
        self.log_new_row()

    def finish(self, gan=None, status: str = "FINISHED") -> None:
        """Log the final row and the artifacts (with ``gan``: its generator as ``generator.keras``), end the run."""
        if not self.active:
            return
        try:
            self.log_new_row()
            for name in ("report.html", "resolved_config.yaml", "metrics.jsonl"):
                if (self.run_dir / name).is_file():
                    self.mlflow.log_artifact(str(self.run_dir / name))
            if (self.run_dir / "report").is_dir():
                self.mlflow.log_artifacts(str(self.run_dir / "report"), artifact_path="report")
            if gan is not None:
                from gan_cli.run.export import export_keras

                path = export_keras(gan, self.run_dir / "generator.keras")
                self.mlflow.log_artifact(str(path))
        except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say what is missing
            print(f"warning: MLflow artifacts incomplete ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                  file=sys.stderr)
        finally:
            self.mlflow.end_run(status=status)
            self.active = False
