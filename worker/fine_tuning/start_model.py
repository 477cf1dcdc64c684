"""The model a fine-tuning task starts from, and the model line its iteration belongs to.

- ``base:<name>`` → the shipped base model (``finetuning.models.registry``); line = ``<name>``.
- ``run:<id>`` → the model that MLflow run logged; line = the run's ``clicktune.model_line`` tag.
- ``models:/<name>@<alias>`` → that registered version; line = the tag of the run behind it, else
  the registered model's name.

An explicit ``options.model_line`` always wins. A start model that does not exist is bad input
(``TaskRefused``); MLflow being unreachable is an infrastructure error (retried).
"""

from __future__ import annotations

from typing import Any

from finetuning.experiments import naming
from finetuning.models.base import EmbeddingsModelInterface
from worker.indexing import resolve_model
from worker.lifecycle import TaskRefused
from worker.lifecycle.errors import safe_detail


def _not_found(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (KeyError, LookupError, FileNotFoundError, ValueError)):
        return True
    if type(exc).__name__ == "NoModelLogged":
        return True
    return isinstance(exc, MlflowException) and getattr(exc, "error_code", "") in {
        "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def load_start_model(ref: str, tracking_uri: str, max_seq_length: int | None = None) -> EmbeddingsModelInterface:
    """Load the start model (base weights or downloaded from MLflow), optionally capping its tokens."""
    try:
        model = resolve_model(ref, tracking_uri)
    except Exception as exc:
        if _not_found(exc):
            raise TaskRefused(f"cannot load start model {ref}: {safe_detail(exc)}") from None
        raise
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
    start = naming.parse_start_ref(ref)
    if start.kind == "base":
        return start.value.rsplit("/", 1)[-1]
    run_id = start.value if start.kind == "run" else None
    registered_name = None
    if start.kind == "registered" and client is not None:
        body = start.value.removeprefix("models:/")
        if "@" in body:
            registered_name, alias = body.split("@", 1)
            run_id = client.get_model_version_by_alias(registered_name, alias).run_id
        else:
            registered_name, version = body.rsplit("/", 1)
            run_id = client.get_model_version(registered_name, version).run_id
    if run_id and client is not None:
        line = client.get_run(run_id).data.tags.get(naming.TAG_MODEL_LINE)
        if line:
            return line
    if registered_name:
        return registered_name
    return f"line-{(run_id or 'unknown')[:12]}"
