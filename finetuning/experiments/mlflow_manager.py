"""``ExperimentsManager``: the MLflow implementation of :class:`ExperimentTracker`.

Layout in MLflow (decided by the experiments layer, one concern per module):

- one **experiment per iteration** of a model line — (model line, start reference, batch id) —
  named by :func:`naming.iteration_experiment_name`, tagged ``clicktune.model_line``,
  ``clicktune.start_ref``, ``clicktune.batch_id`` (:mod:`.iterations`);
- one **run per parameter set**, run name = ``FineTuningParams.id()`` (a stable hash), params =
  ``params.to_mlflow_params()`` plus ``settings.*`` (never secrets); metrics with steps; the run's
  quality is logged at the end as ``quality``, which ranks runs, and as ``best.<figure>`` under the
  name of the held-out figure it is (tag ``clicktune.quality_metric``: the main metric, or the twin
  that chose the weights); the held-out metrics before/after training as tags (:mod:`.runs`);
- a **model** (portable pyfunc LoggedModel, see :mod:`.model_logging`) only for runs that were the
  best of their iteration when they saved (``save_model(best_only=True)``);
- ``finish_iteration`` chooses the best run, records the choice on the run and the model version,
  and registers the model in the **Model Registry** under :func:`naming.registered_model_name`
  (model line) with alias ``candidate``. The ``blue`` alias is moved only by a successful
  reindex, through :meth:`ExperimentsManager.set_alias` (:mod:`.registry`).

Every server call goes through ``self.client``, a :class:`~.client.RetryingClient` (bounded
retries; a server that stays unreachable ends in :class:`~.retry.TrackingUnavailable`).
The manager is not thread-safe: one manager per worker task.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

from mlflow.entities import Run
from pydantic import SecretStr

from finetuning.experiments import naming
from finetuning.experiments.client import tracking_client
from finetuning.experiments.iterations import IterationsMixin
from finetuning.experiments.records import (
    BLUE_ALIAS,
    CANDIDATE_ALIAS,
    FinishedRun,
    IterationNotStarted,
    IterationOutcome,
    QUALITY_METRIC,
    ModelChoice,
    NoModelLogged,
    RunNotStarted,
    mlflow_metric_name,
)
from finetuning.experiments.registry import RegistryMixin
from finetuning.experiments.retry import TrackingRetryPolicy, TrackingUnavailable
from finetuning.experiments.runs import RunsMixin
from finetuning.model_ref import ModelRef
from finetuning.params import FineTuningParams
from finetuning.tracking.tracker import ExperimentTracker


class ExperimentsManager(IterationsMixin, RunsMixin, RegistryMixin, ExperimentTracker):
    """Tracks the iterations of one model line in MLflow (see the module docstring).

    Args:
        tracking_uri: MLflow tracking server, e.g. ``http://mlflow:5000`` (may hold credentials:
            it is never logged; errors are redacted).
        model_line: name of the model line (the registered model name is derived from it).
        main_metric: metric that ranks runs, in our naming (default ``"val_ndcg@10"``).
        higher_is_better: direction of ``main_metric`` (default True).
        retries: bounded retry policy for every MLflow call (default :class:`TrackingRetryPolicy()`).
        candidate_alias: alias set by :meth:`finish_iteration` (default ``"candidate"``).
        should_stop: when it returns True, waits for an unreachable server end at once (a cancel).
        run_tags: tags set on every run this manager creates, e.g. ``{naming.TAG_TASK_ID: task id}``;
            they also identify the runs an interrupted earlier attempt left open
            (:meth:`~.runs.RunsMixin.end_interrupted_runs`).
    """

    def __init__(
        self,
        tracking_uri: str | SecretStr,
        model_line: str,
        main_metric: str = "val_ndcg@10",
        higher_is_better: bool = True,
        retries: TrackingRetryPolicy | None = None,
        candidate_alias: str = CANDIDATE_ALIAS,
        should_stop: Callable[[], bool] | None = None,
        run_tags: Mapping[str, str] | None = None,
    ) -> None:
        uri = tracking_uri.get_secret_value() if isinstance(tracking_uri, SecretStr) else tracking_uri
        self._tracking_uri = uri
        self.retries = retries or TrackingRetryPolicy()
        self.client = tracking_client(uri, self.retries, should_stop)
        self.model_line = model_line
        self.main_metric = main_metric
        self.higher_is_better = higher_is_better
        self.candidate_alias = candidate_alias
        self.run_tags = dict(run_tags or {})
        self.experiment_id: str | None = None
        self.start_ref: ModelRef | None = None
        self.batch_id: str | None = None
        self.run_id: str | None = None
        self._run_params: FineTuningParams | None = None
        self._run_best: float | None = None
        self._run_saved: tuple[float, str] | None = None  # (quality, model_id) saved by this run
        self._run_quality_metric: str | None = None  # the figure the run's quality is (None: main metric)

    def __repr__(self) -> str:  # never show the tracking URI (it may carry credentials)
        return f"ExperimentsManager(model_line={self.model_line!r}, experiment_id={self.experiment_id!r}, run_id={self.run_id!r})"

    @property
    def best_metric_name(self) -> str:
        return "best." + mlflow_metric_name(self.main_metric)

    @property
    def registered_model_name(self) -> str:
        return naming.registered_model_name(self.model_line)

    def _worst(self) -> float:
        return -math.inf if self.higher_is_better else math.inf

    def _order(self) -> list[str]:
        direction = "DESC" if self.higher_is_better else "ASC"
        # runs logged before ``quality`` existed rank by ``best.<main metric>``, which held the same value
        return [f"metrics.`{QUALITY_METRIC}` {direction}", f"metrics.`{self.best_metric_name}` {direction}"]

    def _require_iteration(self) -> str:
        if self.experiment_id is None:
            raise IterationNotStarted("call start_iteration(start_ref, batch_id) first")
        return self.experiment_id

    def _require_run(self) -> str:
        if self.run_id is None:
            raise RunNotStarted("no active run: call start_run(params, settings) first")
        return self.run_id

    def _run_quality(self, run: Run) -> float | None:
        value = run.data.metrics.get(QUALITY_METRIC, run.data.metrics.get(self.best_metric_name))
        return None if value is None or math.isnan(value) else float(value)


__all__ = [
    "BLUE_ALIAS",
    "CANDIDATE_ALIAS",
    "ExperimentsManager",
    "FinishedRun",
    "IterationOutcome",
    "ModelChoice",
    "NoModelLogged",
    "TrackingUnavailable",
    "mlflow_metric_name",
]
