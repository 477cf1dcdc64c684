"""The Model Registry side: register the iteration's chosen run, record the choice, move aliases.

The choice is made once, in :meth:`RegistryMixin.finish_iteration`: the best FINISHED run of the
iteration that logged a model. It is written then — as tags on that run and on the model version
(:class:`~finetuning.experiments.records.ModelChoice`) — and callers read it back from the version
(:meth:`RegistryMixin.model_choice`) instead of deriving it again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

from finetuning.experiments import naming
from finetuning.experiments.records import (
    TAG_METRICS_AFTER,
    TAG_METRICS_BEFORE,
    IterationOutcome,
    ModelChoice,
    NoModelLogged,
    filter_literal,
    metrics_from_json,
)
from finetuning.model_ref import is_model_not_found

if TYPE_CHECKING:
    from finetuning.experiments.mlflow_manager import ExperimentsManager


class RegistryMixin:
    """The registry part of :class:`~finetuning.experiments.mlflow_manager.ExperimentsManager`."""

    def finish_iteration(self: "ExperimentsManager") -> IterationOutcome:
        """Choose the best run, record the choice, register its model under the model line's name
        with the candidate alias.

        Idempotent: if that run's model is already a version of the registered model, the
        version is reused (a re-delivered task does not create duplicates).
        """
        best = self._best_finished_run_with_model()
        if best is None:
            raise NoModelLogged(f"iteration {self.experiment_id} has no finished run with a model")
        run_id, model_id = best.info.run_id, best.data.tags[naming.TAG_MODEL_ID]
        choice = ModelChoice(run_id, self._run_quality(best), metrics_from_json(best.data.tags.get(TAG_METRICS_BEFORE)),
                             metrics_from_json(best.data.tags.get(TAG_METRICS_AFTER)))
        choice_tags = choice.tags(self.main_metric)
        for key, value in choice_tags.items():
            self.client.set_tag(run_id, key, value)
        name = self.registered_model_name
        try:
            self.client.create_registered_model(name, tags={naming.TAG_MODEL_LINE: self.model_line})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = self.client.search_model_versions(f"name = {filter_literal(name)} and run_id = {filter_literal(run_id)}")
        version = next((v for v in existing if v.source == f"models:/{model_id}"), None)
        if version is None:
            tags = {naming.TAG_BATCH_ID: self.batch_id or "", naming.TAG_START_REF: str(self.start_ref), **choice_tags}
            version = self.client.create_model_version(name, f"models:/{model_id}", run_id=run_id, tags=tags,
                                                       model_id=model_id)
        else:
            for key, value in choice_tags.items():
                self.client.set_model_version_tag(name, str(version.version), key, value)
        self.set_alias(name, self.candidate_alias, str(version.version))
        return IterationOutcome(run_id, f"models:/{name}/{version.version}", name, str(version.version), choice)

    def model_choice(self: "ExperimentsManager", name: str, version: str | int) -> ModelChoice:
        """The choice recorded on a registered model version by :meth:`finish_iteration`."""
        found = self.client.get_model_version(name, str(version))
        return ModelChoice.from_tags(found.run_id, found.tags or {})

    def set_alias(self: "ExperimentsManager", name: str, alias: str, version: str | int) -> None:
        """Point ``alias`` of registered model ``name`` at ``version`` (e.g. ``blue`` after a reindex)."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def get_version_by_alias(self: "ExperimentsManager", name: str, alias: str) -> str | None:
        """The version an alias points at, or ``None`` when the alias is not set."""
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as error:
            if is_model_not_found(error):
                return None
            raise
