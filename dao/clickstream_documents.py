"""Clickstream documents: search sessions, the events in them, and the batches they are released in.

Three Mongo collections (see ``dao/clickstream.py``):

- ``clickstream_sessions``: one :class:`StoredSession` per search (query, shown results with their
  1-based ranks and the ``meta`` a loader needs to fetch each item, ``batch_id`` and the
  ``session_number`` that orders sessions within their batch);
- ``clickstream_events``: one :class:`StoredEvent` per user action (``click`` by default) on a
  shown result;
- ``clickstream_batches``: one :class:`ClickstreamBatch` per batch (``open`` until released).

The import format (one JSON object a line) is :class:`SessionRecord` — a session with its
``events`` nested — or a bare :class:`EventRecord` (carrying ``session_id``) for events of a
session already stored. ``ClickstreamSession.model_dump()`` gives the same shape back (plus
``batch_id`` and ``session_number``, which an import ignores), so an export re-imports as is.
Timestamps are ISO 8601 strings on the wire and UTC-aware datetimes here (naive = UTC).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator, model_validator

MAX_ID_CHARS = 512


def _utc(value: datetime) -> datetime:
    """UTC-aware, truncated to milliseconds (what MongoDB stores, so a stored value reads back equal)."""
    try:
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("datetime is out of range once converted to UTC") from None
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _timestamp_text(value: Any) -> Any:
    """Timestamps are ISO 8601 strings on the wire (or datetimes from Python): a bare number is
    ambiguous (seconds? milliseconds?) and refused."""
    if isinstance(value, (str, datetime)):
        return value
    raise ValueError("must be an ISO 8601 string")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
"""A datetime normalised to UTC (a naive one is taken as UTC, as Mongo returns them), to the millisecond."""

WireDatetime = Annotated[datetime, BeforeValidator(_timestamp_text), AfterValidator(_utc)]
"""An imported timestamp: an ISO 8601 string (or a datetime), normalised like :data:`UtcDatetime`."""


class SearchResult(BaseModel):
    """One shown result: the item id, its 1-based rank on the page, and where the item lives."""

    model_config = ConfigDict(extra="forbid")

    object_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    rank: Annotated[int, Strict()] = Field(ge=1)
    meta: dict[str, Any] = Field(default_factory=dict)


class EventRecord(BaseModel):
    """An event as imported: a nested event may omit ``session_id`` (it is its session's)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    session_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    object_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    event_type: str = Field("click", min_length=1, max_length=64)
    created_at: WireDatetime
    meta: dict[str, Any] = Field(default_factory=dict)


class StoredEvent(EventRecord):
    """An event as stored (``session_id`` always set)."""

    model_config = ConfigDict(extra="ignore")

    session_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    created_at: UtcDatetime

    def content_hash(self) -> str:
        """Digest of the event's content: the same ``event_id`` imported again with another digest
        is a conflict (rejected), with the same digest a duplicate (idempotent)."""
        return content_hash(self.model_dump(mode="json"))


class SessionRecord(BaseModel):
    """A session as imported. ``search_results`` must have distinct object ids and distinct
    ranks; nested ``events`` are validated against them by the DAO (an event on an object that
    was not shown is rejected, the session itself is still accepted). ``batch_id`` and
    ``session_number`` are accepted (an export carries them) and ignored: the importing store
    assigns its own."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    search_query: str | dict[str, Any]
    search_results: list[SearchResult] = Field(default_factory=list)
    search_meta: dict[str, Any] = Field(default_factory=dict)
    user_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    created_at: WireDatetime
    is_irrelevant: bool = False
    events: list[dict[str, Any]] = Field(default_factory=list)
    batch_id: str | None = None
    session_number: int | None = None

    @field_validator("search_query")
    @classmethod
    def _query_not_empty(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if not value or (isinstance(value, str) and not value.strip()):
            raise ValueError("search_query is empty")
        return value

    @model_validator(mode="after")
    def _distinct_results(self) -> "SessionRecord":
        ids = [result.object_id for result in self.search_results]
        if len(set(ids)) != len(ids):
            raise ValueError("search_results repeat an object_id")
        ranks = [result.rank for result in self.search_results]
        if len(set(ranks)) != len(ranks):
            raise ValueError("search_results repeat a rank")
        return self

    def shown_object_ids(self) -> set[str]:
        return {result.object_id for result in self.search_results}

    def content_hash(self) -> str:
        """Digest of what is stored of the session (its events, batch and number excluded): the same
        ``session_id`` imported again with another digest is a conflict (rejected), with the same
        digest a duplicate (idempotent)."""
        return content_hash(self.model_dump(mode="json", exclude={"events", "batch_id", "session_number"}))


def content_hash(document: dict[str, Any]) -> str:
    """SHA-256 of ``document`` as canonical JSON (sorted keys, compact)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class StoredSession(BaseModel):
    """A session as stored: the record's fields plus its batch and its number in the batch."""

    model_config = ConfigDict(extra="ignore")

    session_id: str
    search_query: str | dict[str, Any]
    search_results: list[SearchResult]
    search_meta: dict[str, Any] = Field(default_factory=dict)
    user_id: str | None = None
    created_at: UtcDatetime
    is_irrelevant: bool = False
    batch_id: str
    session_number: int


class ClickstreamSession(StoredSession):
    """A stored session with exactly its events (oldest first): what reading a batch yields.
    ``model_dump()`` is the JSONL-like dict (session fields + ``events``)."""

    events: list[StoredEvent] = Field(default_factory=list)

    def clicked_object_ids(self, event_type: str = "click") -> list[str]:
        """Object ids of the session's events of ``event_type``, in event order, deduplicated."""
        return list(dict.fromkeys(e.object_id for e in self.events if e.event_type == event_type))


class BatchStatus(str, Enum):
    open = "open"
    released = "released"


class ClickstreamBatch(BaseModel):
    """A batch of sessions. Exactly one batch is ``open`` at a time: new sessions land in it and
    take the next ``session_number``. Releasing closes it (once per ``release_id``); the next
    session opens a new batch.

    Counters: ``next_session_number`` is the last number handed out (reservations, may run ahead
    of stored sessions when an insert fails); ``session_count`` / ``event_count`` count what was
    stored; ``writers`` is the number of ingest calls still writing into the batch (a release
    waits for it to drop to zero so a released batch no longer changes)."""

    model_config = ConfigDict(extra="ignore")

    batch_id: str
    status: BatchStatus
    release_id: str | None = None
    created_at: UtcDatetime
    released_at: UtcDatetime | None = None
    next_session_number: int = 0
    session_count: int = 0
    event_count: int = 0
    writers: int = 0


class Reject(NamedTuple):
    """A record that was not stored: its 0-based position in the input and why."""

    index: int
    reason: str


class IngestReport(BaseModel):
    """What an ingest call stored. Duplicates (a ``session_id`` / ``event_id`` already stored)
    are not errors — ingest is idempotent — and are counted apart from rejects."""

    accepted_sessions: int = 0
    accepted_events: int = 0
    duplicate_sessions: int = 0
    duplicate_events: int = 0
    rejects: list[Reject] = Field(default_factory=list)
    batch_ids: list[str] = Field(default_factory=list)

    def merge(self, other: "IngestReport") -> "IngestReport":
        """Add ``other``'s counts and rejects to this report (returns self)."""
        self.accepted_sessions += other.accepted_sessions
        self.accepted_events += other.accepted_events
        self.duplicate_sessions += other.duplicate_sessions
        self.duplicate_events += other.duplicate_events
        self.rejects.extend(other.rejects)
        self.batch_ids.extend(b for b in other.batch_ids if b not in self.batch_ids)
        return self
