"""Iterations of a model line: one MLflow experiment per (model line, start, batch), and the one before."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mlflow.entities import Experiment, ViewType
from mlflow.exceptions import MlflowException

from finetuning.experiments import naming
from finetuning.experiments.provenance import RunContext
from finetuning.experiments.records import filter_literal
from finetuning.model_ref import TASK_REF_KINDS, ModelRef
from finetuning.params import FineTuningParams

if TYPE_CHECKING:
    from finetuning.experiments.mlflow_manager import ExperimentsManager

logger = logging.getLogger(__name__)


class IterationsMixin:
    """The iteration part of :class:`~finetuning.experiments.mlflow_manager.ExperimentsManager`."""

    def resolve_start_ref(self: "ExperimentsManager", start_ref: str | ModelRef) -> ModelRef:
        """Parse ``start_ref``; a registered ``models:/name@alias`` becomes the run that made it."""
        start = ModelRef.parse(start_ref, TASK_REF_KINDS)
        if start.kind != "registered":
            return start
        _, alias, version = start.registered_parts
        if alias is None and version is None:
            raise ValueError(f"{start.value!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        run_id = start.source_run_id(self.client)
        if not run_id:
            raise ValueError(f"{start.value!r} has no source run")
        return ModelRef("run", run_id)

    def start_iteration(self: "ExperimentsManager", start_ref: str | ModelRef, batch_id: str,
                        context: RunContext | None = None) -> str:
        """Get or create the experiment of (model line, start, batch); returns its id. Idempotent.

        ``context`` (the task and its data) names and tags the runs that follow (:mod:`.provenance`)."""
        start = self.resolve_start_ref(start_ref)
        name = naming.iteration_experiment_name(self.model_line, start, batch_id)
        tags = {
            naming.TAG_KIND: naming.KIND_ITERATION,
            naming.TAG_MODEL_LINE: self.model_line,
            naming.TAG_START_REF: str(start),
            naming.TAG_BATCH_ID: batch_id,
        }
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(name, tags=tags)
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment_id)
        self.experiment_id, self.start_ref, self.batch_id = experiment_id, start, batch_id
        self.context = context
        logger.info("iteration %s (experiment %s)", name, experiment_id)
        return experiment_id

    def delete_iteration(self: "ExperimentsManager") -> None:
        """Delete the experiment of the *current* iteration, and only that one.

        The id is checked against the iteration's name and tags first, so a stale id can never
        delete another iteration's (or another model line's) experiment.
        """
        experiment_id = self._require_iteration()
        experiment: Experiment = self.client.get_experiment(experiment_id)
        expected = naming.iteration_experiment_name(self.model_line, self.start_ref, self.batch_id)
        if experiment.name != expected or experiment.tags.get(naming.TAG_MODEL_LINE) != self.model_line:
            raise RuntimeError(f"experiment {experiment_id} is {experiment.name!r}, not {expected!r}: not deleting")
        self.client.delete_experiment(experiment_id)
        self.experiment_id = None

    def previous_iteration_experiment_id(self: "ExperimentsManager", model_line: str | None = None) -> str | None:
        """The iteration this one continues.

        When the current iteration starts from a run of the same model line, that run's
        experiment; otherwise the most recent iteration of the line created before the
        current one. ``None`` for the first iteration of a line.
        """
        model_line = model_line or self.model_line
        current: Experiment | None = None
        if self.experiment_id is not None:
            current = self.client.get_experiment(self.experiment_id)
        if self.start_ref is not None and self.start_ref.kind == "run":
            try:
                run = self.client.get_run(self.start_ref.value)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                run = None
            if run is not None and run.info.experiment_id != self.experiment_id:
                experiment = self.client.get_experiment(run.info.experiment_id)
                if experiment.tags.get(naming.TAG_MODEL_LINE) == model_line:
                    return experiment.experiment_id
        experiments = self.client.search_experiments(
            view_type=ViewType.ACTIVE_ONLY,
            filter_string=f"tags.`{naming.TAG_MODEL_LINE}` = {filter_literal(model_line)} "
                          f"and tags.`{naming.TAG_KIND}` = {filter_literal(naming.KIND_ITERATION)}",
            order_by=["creation_time DESC"],
        )
        for experiment in experiments:
            if current is not None and (
                experiment.experiment_id == current.experiment_id or experiment.creation_time >= current.creation_time
            ):
                continue
            return experiment.experiment_id
        return None

    def get_top_params_by_experiment_id(self: "ExperimentsManager", experiment_id: str,
                                        top_n: int) -> list[FineTuningParams]:
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

    def get_previous_iteration_top_params(self: "ExperimentsManager", model_line: str | None = None,
                                          top_n: int = 3) -> list[FineTuningParams]:
        """Top-``top_n`` parameters of the previous iteration of the line ([] for a first one)."""
        experiment_id = self.previous_iteration_experiment_id(model_line)
        return [] if experiment_id is None else self.get_top_params_by_experiment_id(experiment_id, top_n)

    def get_start_params(self: "ExperimentsManager") -> FineTuningParams | None:
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
