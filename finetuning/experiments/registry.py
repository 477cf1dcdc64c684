"""The Model Registry side: register the iteration's chosen run, record the choice, move aliases.

The choice is made once, in :meth:`RegistryMixin.finish_iteration`: the best FINISHED run of the
iteration that logged a model. It is written then — as tags on that run and on the model version
(:class:`~finetuning.experiments.records.ModelChoice`) — and callers read it back from the version
(:meth:`RegistryMixin.model_choice`) instead of deriving it again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

from finetuning.experiments import naming
from finetuning.experiments.records import (
    TAG_QUALITY_METRIC,
    IterationOutcome,
    ModelChoice,
    NoModelLogged,
    filter_literal,
)
from finetuning.experiments.model_card import GateOutcome, render_card, version_description
from finetuning.experiments.model_logging import (
    FORMAT_PYFUNC,
    FORMAT_SENTENCE_TRANSFORMERS,
    TAG_MODEL_FORMAT,
    write_card,
)
from finetuning.experiments.provenance import TAG_GATE_PASSED, TAG_GATE_REASON, TAG_TASK_ID, data_tags
from finetuning.model_ref import is_model_not_found
from finetuning.params import FineTuningParams

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
        choice = replace(ModelChoice.from_tags(run_id, best.data.tags), quality=self._run_quality(best),
                         quality_metric=best.data.tags.get(TAG_QUALITY_METRIC) or self.main_metric)
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

    def record_decision(self: "ExperimentsManager", name: str, version: str | int, gate: GateOutcome) -> str:
        """After the quality gate: describe the version (before/after metrics, the decision and its
        reason, task id, data digest), tag it with the decision and the data, and rewrite the model
        card of its model with the same facts. Returns the description."""
        found = self.client.get_model_version(name, str(version))
        choice = ModelChoice.from_tags(found.run_id, found.tags or {})
        run = self.client.get_run(found.run_id)
        try:
            params = FineTuningParams.from_mlflow_params(run.data.params)
        except ValueError:
            params = None
        settings = self.get_run_settings(found.run_id)
        card = self.model_card(params, settings, run_id=found.run_id, metrics_before=choice.metrics_before,
                               metrics_after=choice.metrics_after, gate=gate)
        context = getattr(self, "context", None)
        if context is None or context.data is None:  # a later process: the data as the run recorded it
            card = card.model_copy(update={"task_id": run.data.tags.get(TAG_TASK_ID)})
        description = version_description(card)
        self.client.update_model_version(name, str(version), description=description)
        tags = {TAG_GATE_PASSED: str(gate.passed).lower(), TAG_GATE_REASON: gate.reason[:5000]}
        if card.task_id:
            tags[TAG_TASK_ID] = card.task_id
        if card.data is not None:
            tags.update(data_tags(card.data))
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, value)
        model_id = found.source.removeprefix("models:/") if found.source.startswith("models:/") else None
        if model_id:
            fmt = self.client.get_logged_model(model_id).tags.get(TAG_MODEL_FORMAT, FORMAT_PYFUNC)
            card = card.model_copy(update={"sentence_transformers": fmt == FORMAT_SENTENCE_TRANSFORMERS})
            self.client.retry("write_card", write_card, self.client.raw, model_id, fmt, render_card(card))
        return description

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
