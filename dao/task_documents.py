"""Task documents: what a task asked for, where it stands, and how it ended.

One Mongo collection per task kind. A document = the lifecycle fields of :class:`TaskDocument`
plus the request fields of the kind (stored flat, at the top level) plus ``result`` (what the job
returned). Status changes only through ``dao.tasks.TasksDAO`` (compare-and-set).

Lifecycle::

    pending ──claim──▶ processing ──▶ done | failed | refused | canceled
       │  ▲                 │
       │  └─ lease expired / retryable error (attempt < max_attempts)
       └──── cancel ──▶ canceled

Terminal states are terminal; ``restart`` creates a new document whose ``parent_id`` is the old one.

Request validation happens here, at enqueue: an unknown model-id format, a missing batch or
malformed options raise :class:`pydantic.ValidationError` before anything is stored or sent.

Adding a task kind = a request model + ``register_task_kind(name, collection, RequestModel)``
(+ an actor and a job in ``worker``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from finetuning.model_ref import KNOWN_BASE_MODELS, task_model_ref  # noqa: F401  (KNOWN_BASE_MODELS re-exported)

DETAIL_MAX_CHARS = 2000

def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """Mongo returns naive datetimes unless the client is ``tz_aware``: they are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def bounded_detail(text: str | None) -> str | None:
    """Cut a human-readable detail to :data:`DETAIL_MAX_CHARS`."""
    if text is None or len(text) <= DETAIL_MAX_CHARS:
        return text
    return text[: DETAIL_MAX_CHARS - 15] + " …[truncated]"


def normalize_embedding_model_id(value: str) -> str:
    """Validate a task's model reference and return its canonical form (:func:`finetuning.model_ref.task_model_ref`).

    Accepted: an MLflow run id (``run:<32 hex>`` or bare 32 hex → ``run:<hex>``), a base model known
    to the service (``base:all-MiniLM-L6-v2``), or a registered model alias (``models:/<name>@<alias>``).
    """
    return str(task_model_ref(value))


class TaskStatus(str, Enum):
    pending = "pending"
    processing = "processing"
    done = "done"
    failed = "failed"
    refused = "refused"
    canceled = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.done, TaskStatus.failed, TaskStatus.refused, TaskStatus.canceled})


class Progress(BaseModel):
    """Where a running task is. Jobs may add fields of their own (e.g. ``items_done``)."""

    model_config = ConfigDict(extra="allow")

    stage: str | None = None
    fraction: float | None = Field(None, ge=0, le=1)
    epoch: int | None = None
    step: int | None = None
    trial: int | None = None
    trials_total: int | None = None
    best_metric: float | None = None


class TaskDocument(BaseModel):
    """Lifecycle fields shared by every task kind (``_id`` is a uuid4 hex string)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str = Field(alias="_id")
    kind: str
    status: TaskStatus = TaskStatus.pending
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    idempotency_key: str | None = None
    broker_message_id: str | None = None
    attempt: int = 0
    max_attempts: int = 1
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    progress: Progress = Field(default_factory=Progress)
    detail: str | None = None
    parent_id: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created_at", "updated_at", "started_at", "finished_at", "lease_expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    @property
    def terminal(self) -> bool:
        return self.status.terminal


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------

class TaskRequest(BaseModel):
    """Base of every request: unknown fields are an error at enqueue."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: str | None = Field(None, min_length=1, max_length=200,
                                        description="Same key → same task (one document, one execution).")
    parent_id: str | None = Field(None, description="The task this one was created from.")


class FineTuningOptions(BaseModel):
    """Options of a fine-tuning task. ``loader`` is validated by the loaders when the job starts."""

    model_config = ConfigDict(extra="forbid")

    loader: dict[str, Any] = Field(default_factory=dict, description="Item loader config (type + settings).")
    max_evals: int = Field(8, ge=1, le=1000, description="Hyperopt trials.")
    num_epochs: int = Field(1, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=8192)
    max_steps: int | None = Field(None, ge=1)
    search_space: dict[str, Any] | None = None
    seed: int = 42
    test_size: float = Field(0.2, gt=0, lt=1)
    # fine-tuning job options: see docs/fine_tuning_job.md
    model_line: str | None = Field(None, min_length=1, max_length=200, description="Model line (MLflow "
                                   "experiments + registered model); default: from the start model.")
    min_improvement: float = Field(0.0, ge=0, description="Quality gate: the candidate must beat the start "
                                   "model's held-out main metric by more than this to be deployed.")
    min_gate_queries: int = Field(10, ge=2, description="Quality gate: distinct held-out queries needed to "
                                  "deploy (their spread is the noise estimate).")
    gate_z: float = Field(1.645, ge=0, description="Quality gate: the one-sided level of the paired per-query test as "
                          "a normal quantile (1.645 = 5 %; the bar is Student's t at that level; 0 = strictly better).")
    gate_metric: str | None = Field(None, min_length=1, description="Quality gate: the held-out metric it judges "
                                    "by; default: the main metric's own-results twin (val_own_ndcg@10) where validated.")
    text_fields: list[str] | None = Field(None, description="Item fields joined into the item text "
                                          "(default: title + text, see loaders.item_to_text).")
    max_seq_length: int | None = Field(None, ge=8, le=8192, description="Token limit of the text towers "
                                       "(kept in the saved model, so serving matches training).")
    settings: dict[str, Any] = Field(default_factory=dict, description="Other FineTuningSettings fields "
                                     "(loss_func, confidence_calculator, main_metric, ...).")

    @field_validator("model_line")
    @classmethod
    def _model_line(cls, value: str | None) -> str | None:
        if value is not None and "'" in value and '"' in value:
            raise ValueError("model_line may hold ' or \" but not both (it is matched in MLflow search filters)")
        return value


class FineTuningRequest(TaskRequest):
    """Fine-tune ``embedding_model_id`` on the clicks of ``batch_id``."""

    embedding_model_id: str
    batch_id: str = Field(min_length=1)
    options: FineTuningOptions = Field(default_factory=FineTuningOptions)
    deploy_as_blue: bool = False
    wait_on_conflict: bool = False

    @field_validator("embedding_model_id")
    @classmethod
    def _model_id(cls, value: str) -> str:
        return normalize_embedding_model_id(value)

    @field_validator("batch_id")
    @classmethod
    def _batch_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("batch_id is empty")
        return value.strip()


class ReindexRequest(TaskRequest):
    """Re-embed the items of a collection with the model of ``dest_run_id`` (blue/green)."""

    source_run_id: str | None = Field(None, description="Model whose collection is re-embedded "
                                      "(None = the current blue).")
    source: str | None = Field(None, description="Or: an explicit source collection name.")
    dest_run_id: str = Field(min_length=1)
    wait_on_conflict: bool = False


class ProbeRequest(TaskRequest):
    """Diagnostic task: sleeps ``seconds`` in small steps, reporting progress and honouring cancel.

    ``refuse`` makes it end ``refused`` with that detail; ``fail_times`` makes its first N attempts
    raise an infrastructure error (to exercise retries). ``pg_table`` makes it depend on PostgreSQL
    (a few rows read at the start and at the end of its sleep, on one connection held throughout;
    the database is the worker's ``CLICKTUNE_PG_DSN``, the table must be in its allow-list);
    ``mlflow_experiment`` makes it log a one-metric run to MLflow at the end. Used by lifecycle
    tests and benchmarks (bench/chaos.py).
    """

    seconds: float = Field(0.0, ge=0, le=24 * 3600)
    step_s: float = Field(0.05, gt=0, le=10)
    refuse: str | None = None
    fail_times: int = Field(0, ge=0)
    pg_table: str | None = Field(None, min_length=1, max_length=200, description="Table (or schema.table) "
                                 "of the worker's PostgreSQL database to read; names no DSN, only a table.")
    mlflow_experiment: str | None = Field(None, min_length=1, max_length=200,
                                          description="Experiment to log a one-metric run into.")


class QualityGateResult(BaseModel):
    """The quality gate's decision and its figures (``worker.jobs.fine_tuning.quality_gate``): ``rule``
    ``paired`` (per held-out query), ``means`` (fallback) or ``keeper`` (the run kept the start weights:
    the keeper's test of its best trained checkpoint); differences are signed, > 0 favours the candidate."""

    passed: bool
    reason: str
    metric: str | None = None
    rule: str | None = None
    before: float | None = None
    after: float | None = None
    n_queries: int | None = None
    mean_difference: float | None = None
    standard_error: float | None = None
    z: float | None = None
    gate_z: float | None = None
    min_gate_queries: int | None = None
    min_improvement: float | None = None


class FineTuningResult(BaseModel):
    """What a finished fine-tuning task reports (in ``result``)."""

    model_config = ConfigDict(extra="allow")

    best_run_id: str | None = None
    best_model_uri: str | None = None
    registered_model_name: str | None = None
    registered_model_version: str | None = None
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None
    reindex_task_id: str | None = None
    # what the fine-tuning job reports: see docs/fine_tuning_job.md
    main_metric: str | None = None
    quality_metric: str | None = None  # the held-out figure that chose the weights (main metric or its twin)
    deployed: bool | None = None
    deploy_reason: str | None = None
    sessions_used: int | None = None
    items_missing: int | None = None
    trials_trained: int | None = None
    trials_skipped: int | None = None
    report_artifact: str | None = None
    gate: QualityGateResult | None = None


def task_document_model(request_model: type[TaskRequest]) -> type[TaskDocument]:
    """The document model of a kind: lifecycle fields + the request's fields."""
    name = request_model.__name__.removesuffix("Request") + "Task"
    fields = {
        field: (info.annotation, info)
        for field, info in request_model.model_fields.items()
        if field not in TaskDocument.model_fields
    }
    # Request validators are not copied: stored documents were validated at enqueue. A kind that
    # must re-check on read (e.g. the model id) adds a validator to its document model.
    return create_model(name, __base__=TaskDocument, **fields)


class FineTuningTask(task_document_model(FineTuningRequest)):  # type: ignore[misc]
    result: FineTuningResult = Field(default_factory=FineTuningResult)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _check_model_id(self) -> Self:
        normalize_embedding_model_id(self.embedding_model_id)
        return self


ReindexTask = task_document_model(ReindexRequest)
ProbeTask = task_document_model(ProbeRequest)


@dataclass(frozen=True)
class TaskKind:
    """A task kind: its name (= Dramatiq actor name), collection, request and document models."""

    name: str
    collection: str
    request_model: type[TaskRequest]
    document_model: type[TaskDocument]


TASK_KINDS: dict[str, TaskKind] = {}


def register_task_kind(name: str, collection: str, request_model: type[TaskRequest],
                       document_model: type[TaskDocument] | None = None) -> TaskKind:
    """Declare a task kind (idempotent for the same arguments)."""
    kind = TaskKind(name, collection, request_model, document_model or task_document_model(request_model))
    TASK_KINDS[name] = kind
    return kind


def get_task_kind(name: str) -> TaskKind:
    try:
        return TASK_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; known: {sorted(TASK_KINDS)}") from None


register_task_kind("fine_tuning", "fine_tuning_tasks", FineTuningRequest, FineTuningTask)
register_task_kind("reindex", "reindex_tasks", ReindexRequest, ReindexTask)
register_task_kind("probe", "probe_tasks", ProbeRequest, ProbeTask)
