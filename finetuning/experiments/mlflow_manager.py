"""``ExperimentsManager``: the MLflow implementation of :class:`ExperimentTracker`.

Layout in MLflow (one place decides it, this module):

- one **experiment per iteration** of a model line — (model line, start reference, batch id) —
  named by :func:`naming.iteration_experiment_name`, tagged ``clicktune.model_line``,
  ``clicktune.start_ref``, ``clicktune.batch_id``;
- one **run per parameter set**, run name = ``FineTuningParams.id()`` (a stable hash), params =
  ``params.to_mlflow_params()`` plus ``settings.*`` (never secrets); metrics with steps; the run's
  best main metric is logged at the end as ``best.<main metric>``, which ranks runs;
- a **model** (portable pyfunc LoggedModel, see :mod:`model_logging`) only for runs that were the
  best of their iteration when they saved (``save_model(best_only=True)``);
- ``finish_iteration`` registers the best run's model in the **Model Registry** under
  :func:`naming.registered_model_name` (model line) with alias ``candidate``. The ``blue`` alias is
  moved only by a successful reindex, through :meth:`ExperimentsManager.set_alias`.

MLflow metric names may not contain ``@``: ``val_ndcg@10`` is stored as ``val_ndcg_at_10``
(:func:`mlflow_metric_name`); callers keep using our names.

Every server call goes through a bounded :class:`~finetuning.experiments.retry.TrackingRetryPolicy`; a
server that stays unreachable ends in :class:`~finetuning.experiments.retry.TrackingUnavailable`.
The manager is not thread-safe: one manager per worker task.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mlflow import MlflowClient
from mlflow.entities import Experiment, Param, Run, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from pydantic import SecretStr

from finetuning.experiments import naming
from finetuning.experiments.model_logging import LoggedModelRef, load_logged_model, log_embeddings_model
from finetuning.model_ref import TASK_REF_KINDS, ModelRef, is_model_not_found
from finetuning.experiments.retry import TrackingRetryPolicy, TrackingUnavailable, configure_mlflow_http
from finetuning.redaction import redact
from finetuning.models.base import EmbeddingsModelInterface
from finetuning.params import FineTuningParams, FineTuningSettings
from finetuning.tracking.tracker import ExperimentTracker, MetricValue

logger = logging.getLogger(__name__)

CANDIDATE_ALIAS = "candidate"
BLUE_ALIAS = "blue"
SETTINGS_PREFIX = "settings."
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")
_SECRET_KEY = re.compile(r"password|passwd|secret|token|credential|api[_-]?key|access[_-]?key", re.I)
_MAX_PARAM_VALUE = 6000


def mlflow_metric_name(name: str) -> str:
    """Our metric name in MLflow's alphabet: ``val_ndcg@10`` → ``val_ndcg_at_10``."""
    return _METRIC_UNSAFE.sub("_", name.replace("@", "_at_"))


class IterationNotStarted(RuntimeError):
    """A run-level call was made before :meth:`ExperimentsManager.start_iteration`."""


class RunNotStarted(RuntimeError):
    """A run-level call was made outside ``start_run`` … ``finish_run``."""


class NoModelLogged(RuntimeError):
    """``finish_iteration`` found no finished run with a logged model."""


@dataclass(frozen=True)
class FinishedRun:
    """A FINISHED run of the current iteration with the same parameters (a trial to skip)."""

    run_id: str
    quality: float | None


class IterationOutcome(NamedTuple):
    """What ``finish_iteration`` registered; unpacks as ``(run_id, model_uri, name, version)``."""

    run_id: str
    model_uri: str
    name: str
    version: str


class ExperimentsManager(ExperimentTracker):
    """Tracks the iterations of one model line in MLflow (see the module docstring).

    Args:
        tracking_uri: MLflow tracking server, e.g. ``http://mlflow:5000`` (may hold credentials:
            it is never logged; errors are redacted).
        model_line: name of the model line (the registered model name is derived from it).
        main_metric: metric that ranks runs, in our naming (default ``"val_ndcg@10"``).
        higher_is_better: direction of ``main_metric`` (default True).
        retries: bounded retry policy for every MLflow call (default :class:`TrackingRetryPolicy()`).
        candidate_alias: alias set by :meth:`finish_iteration` (default ``"candidate"``).
    """

    def __init__(
        self,
        tracking_uri: str | SecretStr,
        model_line: str,
        main_metric: str = "val_ndcg@10",
        higher_is_better: bool = True,
        retries: TrackingRetryPolicy | None = None,
        candidate_alias: str = CANDIDATE_ALIAS,
    ) -> None:
        configure_mlflow_http()
        uri = tracking_uri.get_secret_value() if isinstance(tracking_uri, SecretStr) else tracking_uri
        self._tracking_uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.model_line = model_line
        self.main_metric = main_metric
        self.higher_is_better = higher_is_better
        self.retries = retries or TrackingRetryPolicy()
        self.candidate_alias = candidate_alias
        self.experiment_id: str | None = None
        self.start_ref: ModelRef | None = None
        self.batch_id: str | None = None
        self.run_id: str | None = None
        self._run_params: FineTuningParams | None = None
        self._run_best: float | None = None
        self._run_saved: tuple[float, str] | None = None  # (quality, model_id) saved by this run

    def __repr__(self) -> str:  # never show the tracking URI (it may carry credentials)
        return f"ExperimentsManager(model_line={self.model_line!r}, experiment_id={self.experiment_id!r}, run_id={self.run_id!r})"

    # --- helpers ------------------------------------------------------------------------
    @property
    def best_metric_name(self) -> str:
        return "best." + mlflow_metric_name(self.main_metric)

    @property
    def registered_model_name(self) -> str:
        return naming.registered_model_name(self.model_line)

    def _call(self, what: str, fn, *args, **kwargs):
        return self.retries.call(what, fn, *args, **kwargs)

    def _worst(self) -> float:
        return -math.inf if self.higher_is_better else math.inf

    def _order(self) -> str:
        return f"metrics.`{self.best_metric_name}` {'DESC' if self.higher_is_better else 'ASC'}"

    def _require_iteration(self) -> str:
        if self.experiment_id is None:
            raise IterationNotStarted("call start_iteration(start_ref, batch_id) first")
        return self.experiment_id

    def _require_run(self) -> str:
        if self.run_id is None:
            raise RunNotStarted("no active run: call start_run(params, settings) first")
        return self.run_id

    def _run_quality(self, run: Run) -> float | None:
        value = run.data.metrics.get(self.best_metric_name)
        return None if value is None or math.isnan(value) else float(value)

    # --- iterations ---------------------------------------------------------------------
    def resolve_start_ref(self, start_ref: str | ModelRef) -> ModelRef:
        """Parse ``start_ref``; a registered ``models:/name@alias`` becomes the run that made it."""
        start = ModelRef.parse(start_ref, TASK_REF_KINDS)
        if start.kind != "registered":
            return start
        _, alias, version = start.registered_parts
        if alias is None and version is None:
            raise ValueError(f"{start.value!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        run_id = self._call("get_model_version", start.source_run_id, self.client)
        if not run_id:
            raise ValueError(f"{start.value!r} has no source run")
        return ModelRef("run", run_id)

    def start_iteration(self, start_ref: str | ModelRef, batch_id: str) -> str:
        """Get or create the experiment of (model line, start, batch); returns its id. Idempotent."""
        start = self.resolve_start_ref(start_ref)
        name = naming.iteration_experiment_name(self.model_line, start, batch_id)
        tags = {
            naming.TAG_KIND: naming.KIND_ITERATION,
            naming.TAG_MODEL_LINE: self.model_line,
            naming.TAG_START_REF: str(start),
            naming.TAG_BATCH_ID: batch_id,
        }
        experiment = self._call("get_experiment_by_name", self.client.get_experiment_by_name, name)
        if experiment is None:
            try:
                experiment_id = self._call("create_experiment", self.client.create_experiment, name, tags=tags)
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = self._call("get_experiment_by_name", self.client.get_experiment_by_name, name).experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                self._call("restore_experiment", self.client.restore_experiment, experiment_id)
        self.experiment_id, self.start_ref, self.batch_id = experiment_id, start, batch_id
        logger.info("iteration %s (experiment %s)", name, experiment_id)
        return experiment_id

    def delete_iteration(self) -> None:
        """Delete the experiment of the *current* iteration, and only that one.

        The id is checked against the iteration's name and tags first, so a stale id can never
        delete another iteration's (or another model line's) experiment.
        """
        experiment_id = self._require_iteration()
        experiment: Experiment = self._call("get_experiment", self.client.get_experiment, experiment_id)
        expected = naming.iteration_experiment_name(self.model_line, self.start_ref, self.batch_id)
        if experiment.name != expected or experiment.tags.get(naming.TAG_MODEL_LINE) != self.model_line:
            raise RuntimeError(f"experiment {experiment_id} is {experiment.name!r}, not {expected!r}: not deleting")
        self._call("delete_experiment", self.client.delete_experiment, experiment_id)
        self.experiment_id = None

    # --- runs ---------------------------------------------------------------------------
    def finished_run(self, params: FineTuningParams) -> FinishedRun | None:
        """The best FINISHED run of this iteration whose run name is ``params.id()``, if any."""
        experiment_id = self._require_iteration()
        runs = self._call(
            "search_runs",
            self.client.search_runs,
            [experiment_id],
            f"attributes.run_name = '{params.id()}' and attributes.status = 'FINISHED'",
            order_by=[self._order()],
            max_results=1,
        )
        if not runs:
            return None
        return FinishedRun(runs[0].info.run_id, self._run_quality(runs[0]))

    def is_run_finished(self, params: FineTuningParams) -> bool:
        """True when a trial with these parameters already FINISHED in this iteration (skip it)."""
        return self.finished_run(params) is not None

    def start_run(self, params: FineTuningParams, settings: FineTuningSettings | None = None) -> str:
        """Open a run named ``params.id()`` with the params and settings logged; returns its id."""
        experiment_id = self._require_iteration()
        if self.run_id is not None:
            raise RuntimeError(f"run {self.run_id} is still open: finish_run() first")
        tags = {naming.TAG_PARAMS_ID: params.id(), naming.TAG_MODEL_LINE: self.model_line}
        run = self._call("create_run", self.client.create_run, experiment_id, run_name=params.id(), tags=tags)
        self.run_id = run.info.run_id
        self._run_params, self._run_best, self._run_saved = params, None, None
        logged = dict(params.to_mlflow_params())
        if settings is not None:
            logged.update({SETTINGS_PREFIX + k: v for k, v in settings.to_mlflow_params().items()})
        self._log_params(logged)
        return self.run_id

    def _log_params(self, params: dict[str, str]) -> None:
        run_id = self._require_run()
        batch = [Param(key, value) for key, value in params.items()]
        for i in range(0, len(batch), 100):
            self._call("log_batch", self.client.log_batch, run_id, params=batch[i : i + 100])

    def save_params(self, params: dict[str, object]) -> None:
        """Log extra params on the current run. Secrets (``SecretStr`` values or keys naming a
        password/token/key) are dropped, credentials in URLs are redacted."""
        safe: dict[str, str] = {}
        for key, value in params.items():
            if isinstance(value, SecretStr) or _SECRET_KEY.search(key):
                continue
            safe[key] = redact(str(value))[:_MAX_PARAM_VALUE]
        if safe:
            self._log_params(safe)

    def save_metric(self, metric: MetricValue) -> None:
        """Log a metric (with its step) on the current run; tracks the run's best main metric."""
        run_id = self._require_run()
        value = float(metric.value)
        self._call(
            "log_metric", self.client.log_metric, run_id, mlflow_metric_name(metric.name), value, step=metric.step or 0
        )
        if metric.name == self.main_metric and not math.isnan(value):
            if self._run_best is None or self.is_better(value, self._run_best):
                self._run_best = value

    def get_quality(self) -> float:
        """The current run's best main metric so far (the worst possible value if none yet)."""
        self._require_run()
        return self._run_best if self._run_best is not None else self._worst()

    def get_best_quality(self) -> tuple[str | None, float]:
        """``(run_id, value)`` of the best FINISHED run of this iteration that logged a model;
        ``(None, worst)`` when there is none yet."""
        best = self._best_finished_run_with_model()
        if best is None:
            return None, self._worst()
        return best.info.run_id, self._run_quality(best)

    def _finished_runs(self, experiment_id: str, max_results: int = 1000) -> list[Run]:
        return self._call(
            "search_runs",
            self.client.search_runs,
            [experiment_id],
            "attributes.status = 'FINISHED'",
            order_by=[self._order()],
            max_results=max_results,
        )

    def _best_finished_run_with_model(self) -> Run | None:
        for run in self._finished_runs(self._require_iteration()):
            if run.data.tags.get(naming.TAG_MODEL_ID) and self._run_quality(run) is not None:
                return run
        return None

    def save_model(self, model: EmbeddingsModelInterface, best_only: bool = True, quality: float | None = None) -> bool:
        """Log ``model`` for the current run.

        ``quality``: the main metric of these weights (default: the run's best logged value).
        With ``best_only`` it is logged only when that quality is better than what this
        run saved before and than every finished run of the iteration. The run's previous
        logged model, if any, is deleted so a run keeps one model. Returns whether it logged.
        """
        run_id = self._require_run()
        quality = self.get_quality() if quality is None else quality
        if best_only:
            if self._run_saved is not None and not self.is_better(quality, self._run_saved[0]):
                return False
            _, best = self.get_best_quality()
            if math.isfinite(best) and not self.is_better(quality, best):
                return False
        ref: LoggedModelRef = self._call(
            "log_model",
            log_embeddings_model,
            model,
            self.client,
            run_id=run_id,
            tags={naming.TAG_MODEL_LINE: self.model_line, naming.TAG_PARAMS_ID: self._run_params.id() if self._run_params else ""},
        )
        self._call("set_tag", self.client.set_tag, run_id, naming.TAG_MODEL_ID, ref.model_id)
        self._call("set_tag", self.client.set_tag, run_id, naming.TAG_MODEL_QUALITY, repr(quality))
        if self._run_saved is not None:
            previous_model_id = self._run_saved[1]
            try:
                self._call("delete_logged_model", self.client.delete_logged_model, previous_model_id)
            except MlflowException as error:  # the new model is logged; a leftover is only space
                logger.warning("could not delete superseded model %s: %s", previous_model_id, error)
        self._run_saved = (quality, ref.model_id)
        return True

    def finish_run(self, status: str = "FINISHED", quality: float | None = None) -> None:
        """Close the current run with ``status`` (FINISHED/FAILED/KILLED).

        ``best.<main metric>`` is logged from ``quality`` (e.g. what the trial returned) or the
        best ``save_metric`` value; a FINISHED run without either gets the worst value, so it
        ranks last instead of vanishing from the ranking.
        """
        run_id = self._require_run()
        RunStatus.from_string(status)  # raises for an unknown status
        value = quality if quality is not None and not math.isnan(quality) else self._run_best
        if value is None and status == "FINISHED":
            value = self._worst()
        if value is not None:
            finite = value if math.isfinite(value) else (-1e30 if value < 0 else 1e30)
            self._call("log_metric", self.client.log_metric, run_id, self.best_metric_name, float(finite))
        self._call("set_terminated", self.client.set_terminated, run_id, status)
        self.abandon_run()

    def abandon_run(self) -> None:
        """Forget the current run locally without contacting MLflow (when closing it failed)."""
        self.run_id, self._run_params, self._run_best, self._run_saved = None, None, None, None

    # --- reading runs and models --------------------------------------------------------
    def get_run_params(self, run_id: str) -> FineTuningParams:
        """The ``FineTuningParams`` a run was logged with."""
        run = self._call("get_run", self.client.get_run, run_id)
        return FineTuningParams.from_mlflow_params(run.data.params)

    def get_run_settings(self, run_id: str) -> FineTuningSettings:
        """The ``FineTuningSettings`` a run was logged with (the ``settings.*`` params)."""
        run = self._call("get_run", self.client.get_run, run_id)
        raw = {k[len(SETTINGS_PREFIX) :]: v for k, v in run.data.params.items() if k.startswith(SETTINGS_PREFIX)}
        return FineTuningSettings.from_mlflow_params(raw)

    def get_model_uri_by_run_id(self, run_id: str) -> str:
        """``models:/<model_id>`` of the model a run logged (raises ``NoModelLogged``)."""
        run = self._call("get_run", self.client.get_run, run_id)
        model_id = run.data.tags.get(naming.TAG_MODEL_ID)
        if not model_id:
            models = self._call(
                "search_logged_models",
                self.client.search_logged_models,
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{run_id}'",
                order_by=[{"field_name": "creation_timestamp", "ascending": False}],
                max_results=1,
            )
            if not models:
                raise NoModelLogged(f"run {run_id} has no logged model")
            model_id = models[0].model_id
        return f"models:/{model_id}"

    def download_model_by_run_id(self, run_id: str, device: str | None = None, dst: str | Path | None = None) -> EmbeddingsModelInterface:
        """Download and load the model a run logged (a fresh process needs nothing else)."""
        return self.download_model(self.get_model_uri_by_run_id(run_id), device=device, dst=dst)

    def download_model(self, model_uri: str, device: str | None = None, dst: str | Path | None = None) -> EmbeddingsModelInterface:
        """Load ``models:/<model_id>``, ``models:/<name>@<alias>`` or ``models:/<name>/<version>``."""
        return self._call("download_model", load_logged_model, model_uri, tracking_uri=self._tracking_uri, device=device, dst=dst)

    def get_top_params_by_experiment_id(self, experiment_id: str, top_n: int) -> list[FineTuningParams]:
        """Parameters of the ``top_n`` best FINISHED runs of an experiment (distinct, best first)."""
        result: list[FineTuningParams] = []
        seen: set[str] = set()
        for run in self._finished_runs(experiment_id):
            if len(result) >= top_n:
                break
            if self._run_quality(run) is None:
                continue
            try:
                params = FineTuningParams.from_mlflow_params(run.data.params)
            except ValueError as error:  # a run logged by an older parameter schema
                logger.warning("skipping run %s: unreadable params (%s)", run.info.run_id, error)
                continue
            if params.id() not in seen:
                seen.add(params.id())
                result.append(params)
        return result

    def previous_iteration_experiment_id(self, model_line: str | None = None) -> str | None:
        """The iteration this one continues.

        When the current iteration starts from a run of the same model line, that run's
        experiment; otherwise the most recent iteration of the line created before the
        current one. ``None`` for the first iteration of a line.
        """
        model_line = model_line or self.model_line
        current: Experiment | None = None
        if self.experiment_id is not None:
            current = self._call("get_experiment", self.client.get_experiment, self.experiment_id)
        if self.start_ref is not None and self.start_ref.kind == "run":
            try:
                run = self._call("get_run", self.client.get_run, self.start_ref.value)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                run = None
            if run is not None and run.info.experiment_id != self.experiment_id:
                experiment = self._call("get_experiment", self.client.get_experiment, run.info.experiment_id)
                if experiment.tags.get(naming.TAG_MODEL_LINE) == model_line:
                    return experiment.experiment_id
        experiments = self._call(
            "search_experiments",
            self.client.search_experiments,
            view_type=ViewType.ACTIVE_ONLY,
            filter_string=f"tags.`{naming.TAG_MODEL_LINE}` = '{model_line}' and tags.`{naming.TAG_KIND}` = '{naming.KIND_ITERATION}'",
            order_by=["creation_time DESC"],
        )
        for experiment in experiments:
            if current is not None and (
                experiment.experiment_id == current.experiment_id or experiment.creation_time >= current.creation_time
            ):
                continue
            return experiment.experiment_id
        return None

    def get_previous_iteration_top_params(self, model_line: str | None = None, top_n: int = 3) -> list[FineTuningParams]:
        """Top-``top_n`` parameters of the previous iteration of the line ([] for a first one)."""
        experiment_id = self.previous_iteration_experiment_id(model_line)
        return [] if experiment_id is None else self.get_top_params_by_experiment_id(experiment_id, top_n)

    def get_start_params(self) -> FineTuningParams | None:
        """Parameters of the start run when the iteration starts from an MLflow run."""
        if self.start_ref is None or self.start_ref.kind != "run":
            return None
        try:
            return self.get_run_params(self.start_ref.value)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        except ValueError:
            return None

    # --- registry -----------------------------------------------------------------------
    def finish_iteration(self) -> IterationOutcome:
        """Register the best run's model under the model line's name with the candidate alias.

        Idempotent: if that run's model is already a version of the registered model, the
        version is reused (a re-delivered task does not create duplicates).
        """
        best = self._best_finished_run_with_model()
        if best is None:
            raise NoModelLogged(f"iteration {self.experiment_id} has no finished run with a model")
        run_id, model_id = best.info.run_id, best.data.tags[naming.TAG_MODEL_ID]
        name = self.registered_model_name
        try:
            self._call("create_registered_model", self.client.create_registered_model, name,
                       tags={naming.TAG_MODEL_LINE: self.model_line})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = self._call("search_model_versions", self.client.search_model_versions,
                              f"name = '{name}' and run_id = '{run_id}'")
        version = next((v for v in existing if v.source == f"models:/{model_id}"), None)
        if version is None:
            version = self._call(
                "create_model_version",
                self.client.create_model_version,
                name,
                f"models:/{model_id}",
                run_id=run_id,
                tags={naming.TAG_BATCH_ID: self.batch_id or "", naming.TAG_START_REF: str(self.start_ref)},
                model_id=model_id,
            )
        self.set_alias(name, self.candidate_alias, str(version.version))
        return IterationOutcome(run_id, f"models:/{name}/{version.version}", name, str(version.version))

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Point ``alias`` of registered model ``name`` at ``version`` (e.g. ``blue`` after a reindex)."""
        self._call("set_registered_model_alias", self.client.set_registered_model_alias, name, alias, str(version))

    def get_version_by_alias(self, name: str, alias: str) -> str | None:
        """The version an alias points at, or ``None`` when the alias is not set."""
        try:
            return str(self._call("get_model_version_by_alias", self.client.get_model_version_by_alias, name, alias).version)
        except MlflowException as error:
            if is_model_not_found(error):
                return None
            raise


__all__ = [
    "BLUE_ALIAS",
    "CANDIDATE_ALIAS",
    "ExperimentsManager",
    "FinishedRun",
    "IterationOutcome",
    "NoModelLogged",
    "TrackingUnavailable",
    "mlflow_metric_name",
]
