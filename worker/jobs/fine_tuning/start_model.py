"""The model a fine-tuning task starts from, and the model line its iteration belongs to.

- ``base:<name>`` → the shipped base model (``finetuning.models.registry``); line = ``<name>``.
- ``run:<id>`` → the model that MLflow run logged; line = the run's ``clicktune.model_line`` tag.
- ``models:/<name>@<alias>`` → that registered version; line = the tag of the run behind it, else
  the registered model's name.

An explicit ``options.model_line`` always wins. A start model that does not exist is bad input
(``TaskRefused``); MLflow being unreachable is an infrastructure error (retried).
"""

from __future__ import annotations

from typing import Any, Callable

from finetuning.experiments import naming
from finetuning.model_ref import TASK_REF_KINDS, ModelNotFound, ModelRef
from finetuning.models.base import EmbeddingsModelInterface
from worker.lifecycle import TaskRefused
from worker.lifecycle.errors import safe_detail


def load_start_model(ref: str, tracking_uri: str, max_seq_length: int | None = None, *,
                     should_stop: Callable[[], bool] | None = None) -> EmbeddingsModelInterface:
    """Load the start model (base weights or downloaded from MLflow), optionally capping its tokens."""
    try:
        model = ModelRef.parse(ref).load(tracking_uri, should_stop=should_stop)
    except (ModelNotFound, ValueError) as exc:
        raise TaskRefused(f"cannot load start model {ref}: {safe_detail(exc.__cause__ or exc)}") from None
    if max_seq_length is not None:
        set_max_seq_length(model, max_seq_length)
    return model


def set_max_seq_length(model: Any, max_seq_length: int) -> None:
    """Cap the tokens of every sentence-transformers tower of ``model`` (other kinds are left alone)."""
    for name in ("query_model", "_items_model"):
        tower = getattr(model, name, None)
        if tower is not None and hasattr(tower, "max_seq_length"):
            tower.max_seq_length = max_seq_length


def default_model_line(ref: str, client: Any | None) -> str:
    """The model line of a start reference (see module docstring); ``client`` is an ``MlflowClient``."""
    start = ModelRef.parse(ref, TASK_REF_KINDS)
    if start.kind == "base":
        return start.token
    run_id = start.source_run_id(client) if client is not None else start.run_id
    registered_name = start.registered_parts[0] if start.kind == "registered" else None
    if run_id and client is not None:
        line = client.get_run(run_id).data.tags.get(naming.TAG_MODEL_LINE)
        if line:
            return line
    if registered_name:
        return registered_name
    return f"line-{(run_id or 'unknown')[:12]}"
