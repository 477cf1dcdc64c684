"""Optional MLflow recording of a Q&A run: params, metrics as they are logged, final artifacts.

Active only when a tracking URI is configured (``QATrainingConfig.tracking_uri`` or the
``MLFLOW_TRACKING_URI`` environment variable). A resumed run continues the same MLflow run (its
id is kept in ``training_progress.json``). The URI itself is never logged (it may hold
credentials).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


def tracking_uri(configured: str | None) -> str | None:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or None


def _safe_metric_name(name: str) -> str:
    return name.replace("@", "_at_")


class MlflowRecorder:
    """A thin wrapper over the ``mlflow`` client API for one run."""

    def __init__(self, uri: str, experiment_name: str, run_id: str | None = None, run_name: str | None = None) -> None:
        import mlflow

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)
        if run_id is not None:
            try:
                self.run_id = self.client.get_run(run_id).info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return
            except Exception:  # the run vanished (other server, deleted): start a new one
                pass
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_params(self, params: dict[str, str]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        for key, value in params.items():
            if key not in existing:  # params are immutable in MLflow; a resumed run keeps them
                self.client.log_param(self.run_id, key, str(value)[:6000])

    def log_metrics(self, metrics: dict[str, float], step: int, prefix: str = "") -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.client.log_metric(self.run_id, _safe_metric_name(prefix + key), float(value), step=step)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_artifact(self, path: Path) -> None:
        if path.exists():
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class MlflowMetricsCallback(TrainerCallback):
    """Sends the trainer's training loss and evaluation metrics to :class:`MlflowRecorder`."""

    def __init__(self, recorder: MlflowRecorder) -> None:
        self.recorder = recorder

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.recorder.log_metrics({"train_loss": logs["loss"]}, step=state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        from finetuning.qa.evaluation import plain_metrics

        self.recorder.log_metrics(plain_metrics(metrics or {}), step=state.global_step, prefix="eval_")
