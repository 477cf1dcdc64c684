"""Runs of an iteration: one run per parameter set, its params, metrics, model, and how it ended."""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from pydantic import SecretStr

from finetuning.experiments import naming, provenance
from finetuning.experiments.model_card import ModelCard, render_card
from finetuning.experiments.model_logging import (
    FORMAT_SENTENCE_TRANSFORMERS,
    LoggedModelRef,
    load_logged_model,
    log_embeddings_model,
    logged_model_uri,
    model_format,
)
from finetuning.experiments.records import (
    PER_QUERY_ARTIFACT,
    QUALITY_METRIC,
    SETTINGS_PREFIX,
    TAG_KEEPER,
    TAG_METRICS_AFTER,
    TAG_METRICS_BEFORE,
    TAG_QUALITY_METRIC,
    FinishedRun,
    filter_literal,
    metrics_json,
    mlflow_metric_name,
    per_query_from_payload,
    per_query_payload,
)
from finetuning.keeper_verdict import KeeperVerdict
from finetuning.models.base import EmbeddingsModelInterface
from finetuning.params import FineTuningParams, FineTuningSettings
from finetuning.redaction import redact
from finetuning.tracking.tracker import MetricValue

if TYPE_CHECKING:
    from finetuning.experiments.mlflow_manager import ExperimentsManager

logger = logging.getLogger(__name__)

_SECRET_KEY = re.compile(r"password|passwd|secret|token|credential|api[_-]?key|access[_-]?key", re.I)
_MAX_PARAM_VALUE = 6000


class RunsMixin:
    """The run part of :class:`~finetuning.experiments.mlflow_manager.ExperimentsManager`."""

    # --- finding runs -----------------------------------------------------------------
    def finished_run(self: "ExperimentsManager", params: FineTuningParams) -> FinishedRun | None:
        """The best FINISHED run of this iteration with these parameters (tag ``clicktune.params_id``), if any."""
        runs = self.client.search_runs(
            [self._require_iteration()],
            f"tags.`{naming.TAG_PARAMS_ID}` = {filter_literal(params.id())} and attributes.status = 'FINISHED'",
            order_by=self._order(),
            max_results=1,
        )
        if not runs:
            return None
        return FinishedRun(runs[0].info.run_id, self._run_quality(runs[0]))

    def is_run_finished(self: "ExperimentsManager", params: FineTuningParams) -> bool:
        """True when a trial with these parameters already FINISHED in this iteration (skip it)."""
        return self.finished_run(params) is not None

    def _finished_runs(self: "ExperimentsManager", experiment_id: str, max_results: int = 1000) -> list[Run]:
        return self.client.search_runs([experiment_id], "attributes.status = 'FINISHED'",
                                       order_by=self._order(), max_results=max_results)

    def _best_finished_run_with_model(self: "ExperimentsManager") -> Run | None:
        for run in self._finished_runs(self._require_iteration()):
            if run.data.tags.get(naming.TAG_MODEL_ID) and self._run_quality(run) is not None:
                return run
        return None

    def get_best_quality(self: "ExperimentsManager") -> tuple[str | None, float]:
        """``(run_id, value)`` of the best FINISHED run of this iteration that logged a model;
        ``(None, worst)`` when there is none yet."""
        best = self._best_finished_run_with_model()
        if best is None:
            return None, self._worst()
        return best.info.run_id, self._run_quality(best)

    def end_interrupted_runs(self: "ExperimentsManager", status: str = "KILLED") -> list[str]:
        """Close (``KILLED``) the runs of this iteration still ``RUNNING`` under this manager's
        ``run_tags`` — left open by an earlier attempt that was killed or lost MLflow mid-run. Only
        meaningful while the caller is the one live attempt of its task (it holds the task's lease);
        without ``run_tags`` nothing is touched. Returns the closed run ids."""
        if not self.run_tags:
            return []
        tags = " and ".join(f"tags.`{key}` = {filter_literal(value)}" for key, value in sorted(self.run_tags.items()))
        runs = self.client.search_runs([self._require_iteration()], f"attributes.status = 'RUNNING' and {tags}")
        closed = [run.info.run_id for run in runs if run.info.run_id != self.run_id]
        for run_id in closed:
            self.client.set_terminated(run_id, status)
            logger.warning("closed run %s as %s: an earlier attempt left it running", run_id, status)
        return closed

    # --- the current run ----------------------------------------------------------------
    def start_run(self: "ExperimentsManager", params: FineTuningParams, settings: FineTuningSettings | None = None,
                  trial: int | None = None) -> str:
        """Open a run for ``params`` (trial number ``trial`` of the iteration); returns its id.

        Name and tags come from :mod:`.provenance` (task, trial, attempt, data digests when the
        iteration has a :class:`RunContext`); params and ``settings.*`` are logged, and the batch
        is logged as the run's dataset input."""
        experiment_id = self._require_iteration()
        if self.run_id is not None:
            raise RuntimeError(f"run {self.run_id} is still open: finish_run() first")
        context = getattr(self, "context", None)
        tags = {**self.run_tags, **provenance.run_tags(context, model_line=self.model_line, batch_id=self.batch_id,
                                                       params_id=params.id(), trial=trial)}
        run = self.client.create_run(experiment_id, run_name=provenance.run_name(context, trial, params.id()), tags=tags)
        self.run_id = run.info.run_id
        self._run_params, self._run_best, self._run_saved, self._run_settings = params, None, None, settings
        self._run_quality_metric = None
        logged = dict(params.to_mlflow_params())
        if settings is not None:
            logged.update({SETTINGS_PREFIX + k: v for k, v in settings.to_mlflow_params().items()})
        self._log_params(logged)
        if context is not None and context.data is not None:
            dataset = provenance.batch_dataset(context.data)._to_mlflow_entity()
            self.client.log_inputs(self.run_id, datasets=[
                DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, provenance.DATASET_CONTEXT)])])
        return self.run_id

    def _log_params(self: "ExperimentsManager", params: dict[str, str]) -> None:
        run_id = self._require_run()
        batch = [Param(key, value) for key, value in params.items()]
        for i in range(0, len(batch), 100):
            self.client.log_batch(run_id, params=batch[i : i + 100])

    def save_params(self: "ExperimentsManager", params: dict[str, object]) -> None:
        """Log extra params on the current run. Secrets (``SecretStr`` values or keys naming a
        password/token/key) are dropped, credentials in URLs are redacted."""
        safe: dict[str, str] = {}
        for key, value in params.items():
            if isinstance(value, SecretStr) or _SECRET_KEY.search(key):
                continue
            safe[key] = redact(str(value))[:_MAX_PARAM_VALUE]
        if safe:
            self._log_params(safe)

    def save_metric(self: "ExperimentsManager", metric: MetricValue) -> None:
        """Log a metric (with its step) on the current run; tracks the run's best main metric."""
        self.save_metrics([metric])

    def save_metrics(self: "ExperimentsManager", metrics: Sequence[MetricValue]) -> None:
        """Log several metrics (with their steps) in one call; tracks the run's best main metric."""
        run_id = self._require_run()
        now = int(time.time() * 1000)
        batch = [Metric(mlflow_metric_name(m.name), float(m.value), now, m.step or 0) for m in metrics]
        for start in range(0, len(batch), 1000):  # MLflow's limit per call
            self.client.log_batch(run_id, metrics=batch[start : start + 1000])
        for metric in metrics:
            value = float(metric.value)
            if metric.name == self.main_metric and not math.isnan(value):
                if self._run_best is None or self.is_better(value, self._run_best):
                    self._run_best = value

    def save_evaluation(self: "ExperimentsManager", metrics_before: Mapping[str, float],
                        metrics_after: Mapping[str, float],
                        per_query: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                        keeper: KeeperVerdict | None = None) -> None:
        """Record on the current run the held-out metrics of the start weights and of the weights it
        kept and the keeper's verdict (tags, read back when the run is chosen: :meth:`finish_iteration`) and each metric per
        held-out query of both (artifact :data:`PER_QUERY_ARTIFACT`, read back by
        :meth:`held_out_per_query` for the quality gate)."""
        run_id = self._require_run()
        self.client.set_tag(run_id, TAG_METRICS_BEFORE, metrics_json(metrics_before))
        self.client.set_tag(run_id, TAG_METRICS_AFTER, metrics_json(metrics_after))
        if keeper is not None:
            self.client.set_tag(run_id, TAG_KEEPER, keeper.to_json())
        if per_query:
            self.client.log_dict(run_id, per_query_payload(per_query), PER_QUERY_ARTIFACT)

    def held_out_per_query(self: "ExperimentsManager", run_id: str, metric: str | None = None
                           ) -> tuple[list[float], list[float]] | None:
        """``(start, kept weights)``: ``metric`` (default: the main metric) per held-out query as run
        ``run_id`` recorded it; None when it recorded none or they do not pair up."""
        folder, _, name = PER_QUERY_ARTIFACT.rpartition("/")
        if PER_QUERY_ARTIFACT not in {a.path for a in self.client.list_artifacts(run_id, folder)}:
            return None
        with tempfile.TemporaryDirectory(prefix="clicktune-eval-") as tmp:
            local = self.client.download_artifacts(run_id, PER_QUERY_ARTIFACT, tmp)
            try:
                payload = json.loads(Path(local).read_text())
            except (OSError, ValueError):
                return None
        return per_query_from_payload(payload, metric or self.main_metric)

    def save_quality_metric(self: "ExperimentsManager", name: str) -> None:
        """Name the held-out figure this run's quality is (tag ``clicktune.quality_metric``); :meth:`finish_run`
        logs the quality as ``best.<name>`` beside ``quality``."""
        self.client.set_tag(self._require_run(), TAG_QUALITY_METRIC, name)
        self._run_quality_metric = name

    def get_quality(self: "ExperimentsManager") -> float:
        """The current run's best main metric so far (the worst possible value if none yet)."""
        self._require_run()
        return self._run_best if self._run_best is not None else self._worst()

    def save_model(self: "ExperimentsManager", model: EmbeddingsModelInterface, best_only: bool = True,
                   quality: float | None = None) -> bool:
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
        tags = {naming.TAG_MODEL_LINE: self.model_line,
                naming.TAG_PARAMS_ID: self._run_params.id() if self._run_params else ""}
        card = render_card(self.model_card(self._run_params, getattr(self, "_run_settings", None), run_id=run_id,
                                           sentence_transformers=model_format(model) == FORMAT_SENTENCE_TRANSFORMERS))
        ref: LoggedModelRef = self.client.retry("log_model", log_embeddings_model, model, self.client.raw,
                                                run_id=run_id, tags=tags, card=card)
        self.client.set_tag(run_id, naming.TAG_MODEL_ID, ref.model_id)
        self.client.set_tag(run_id, naming.TAG_MODEL_QUALITY, repr(quality))
        if self._run_saved is not None:
            previous_model_id = self._run_saved[1]
            try:
                self.client.delete_logged_model(previous_model_id)
            except MlflowException as error:  # the new model is logged; a leftover is only space
                logger.warning("could not delete superseded model %s: %s", previous_model_id, error)
        self._run_saved = (quality, ref.model_id)
        return True

    def model_card(self: "ExperimentsManager", params: FineTuningParams | None, settings: FineTuningSettings | None,
                   **fields: object) -> ModelCard:
        """The model card of a model of this iteration trained with ``params``/``settings`` (``fields``:
        run id, metrics, gate …)."""
        context = getattr(self, "context", None)
        return ModelCard(
            model_line=self.model_line, start_model=str(self.start_ref), main_metric=self.main_metric,
            task_id=context.task_id if context else None, data=context.data if context else None,
            click_model=settings.confidence_calculator if settings else None,
            loss=settings.loss_func if settings else None,
            hyper_parameters=dict(params.to_mlflow_params()) if params else {}, **fields,
        )

    def finish_run(self: "ExperimentsManager", status: str = "FINISHED", quality: float | None = None) -> None:
        """Close the current run with ``status`` (FINISHED/FAILED/KILLED).

        The run's quality — ``quality`` (e.g. what the trial returned) or the best ``save_metric`` value
        of the main metric — is logged as ``quality``, which ranks runs, and as ``best.<figure>``
        (:meth:`save_quality_metric`, default the main metric); a FINISHED run without either gets the
        worst value, so it ranks last instead of vanishing from the ranking.
        """
        run_id = self._require_run()
        RunStatus.from_string(status)  # raises for an unknown status
        value = quality if quality is not None and not math.isnan(quality) else self._run_best
        if value is None and status == "FINISHED":
            value = self._worst()
        if value is not None:
            finite = float(value if math.isfinite(value) else (-1e30 if value < 0 else 1e30))
            named = "best." + mlflow_metric_name(self._run_quality_metric or self.main_metric)
            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(QUALITY_METRIC, finite, now, 0), Metric(named, finite, now, 0)])
        self.client.set_terminated(run_id, status)
        self.abandon_run()

    def abandon_run(self: "ExperimentsManager") -> None:
        """Forget the current run locally without contacting MLflow (when closing it failed)."""
        self.run_id, self._run_params, self._run_best, self._run_saved = None, None, None, None
        self._run_settings, self._run_quality_metric = None, None

    # --- reading runs and models --------------------------------------------------------
    def get_run_params(self: "ExperimentsManager", run_id: str) -> FineTuningParams:
        """The ``FineTuningParams`` a run was logged with."""
        return FineTuningParams.from_mlflow_params(self.client.get_run(run_id).data.params)

    def get_run_settings(self: "ExperimentsManager", run_id: str) -> FineTuningSettings:
        """The ``FineTuningSettings`` a run was logged with (the ``settings.*`` params)."""
        params = self.client.get_run(run_id).data.params
        raw = {k[len(SETTINGS_PREFIX) :]: v for k, v in params.items() if k.startswith(SETTINGS_PREFIX)}
        return FineTuningSettings.from_mlflow_params(raw)

    def get_model_uri_by_run_id(self: "ExperimentsManager", run_id: str) -> str:
        """``models:/<model_id>`` of the model a run logged (raises ``NoModelLogged``)."""
        return logged_model_uri(self.client, run_id)

    def download_model_by_run_id(self: "ExperimentsManager", run_id: str, device: str | None = None,
                                 dst: str | Path | None = None) -> EmbeddingsModelInterface:
        """Download and load the model a run logged (a fresh process needs nothing else)."""
        return self.download_model(self.get_model_uri_by_run_id(run_id), device=device, dst=dst)

    def download_model(self: "ExperimentsManager", model_uri: str, device: str | None = None,
                       dst: str | Path | None = None) -> EmbeddingsModelInterface:
        """Load ``models:/<model_id>``, ``models:/<name>@<alias>`` or ``models:/<name>/<version>``."""
        return self.client.retry("download_model", load_logged_model, model_uri, tracking_uri=self._tracking_uri,
                                 device=device, dst=dst)
