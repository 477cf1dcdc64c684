"""Request and response bodies of the API that the DAO documents do not already give.

Sessions and events are the DAO's own models (:class:`~dao.clickstream_documents.SessionRecord`,
:class:`~dao.clickstream_documents.EventRecord`, :class:`~dao.clickstream_documents.ClickstreamBatch`);
task requests are :class:`~dao.task_documents.FineTuningRequest` /
:class:`~dao.task_documents.ReindexRequest`; search bodies live in :mod:`worker.search`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dao.clickstream_documents import IngestReport
from dao.task_documents import TaskDocument

MAX_BULK_RECORDS = 10_000


class RejectedRecord(BaseModel):
    """A record that was not stored: its 0-based position in the request and why."""

    index: int
    reason: str


class IngestResult(BaseModel):
    """What an ingest call stored (duplicates are idempotent replays, not errors)."""

    accepted_sessions: int
    accepted_events: int
    duplicate_sessions: int
    duplicate_events: int
    rejected: list[RejectedRecord]
    batch_ids: list[str]

    @classmethod
    def of(cls, report: IngestReport) -> "IngestResult":
        return cls(accepted_sessions=report.accepted_sessions, accepted_events=report.accepted_events,
                   duplicate_sessions=report.duplicate_sessions, duplicate_events=report.duplicate_events,
                   rejected=[RejectedRecord(index=r.index, reason=r.reason) for r in report.rejects],
                   batch_ids=report.batch_ids)


class BulkRecords(BaseModel):
    """Sessions (with nested events) and/or events, in the JSONL import format, one per item."""

    model_config = ConfigDict(extra="forbid")

    records: list[Any] = Field(max_length=MAX_BULK_RECORDS,
                               description="Each a session (search_query …) or an event (event_id, session_id …).")


class BulkEvents(BaseModel):
    """Events of stored sessions (each with ``session_id``)."""

    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(max_length=MAX_BULK_RECORDS)


class IrrelevantFlag(BaseModel):
    model_config = ConfigDict(extra="forbid")

    irrelevant: bool = Field(True, description="The user found nothing useful in this session.")


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: str | None = Field(None, min_length=1, max_length=200,
                                   description="Idempotency key: the same id always releases (and returns) the same batch.")


class TaskView(TaskDocument):
    """A task document as the CLI's ``--json`` shows it: lifecycle fields plus its kind's request
    fields and result."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @classmethod
    def of(cls, task: TaskDocument) -> "TaskView":
        return cls.model_validate(task.model_dump(mode="json", by_alias=True))


class TaskCreated(BaseModel):
    task_id: str
    kind: str


class Liveness(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str = Field(description="ok or unavailable")
    checks: dict[str, str] = Field(description="Each dependency: ok, or why not.")
