"""Clickstream ingest: validate records and write sessions and events, chunk by chunk.

A mixin of :class:`~dao.clickstream.ClickstreamDAO` (which owns the collections); the validation,
duplicate and conflict contract is described in :mod:`dao.clickstream`.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from bson.errors import InvalidDocument
from pydantic import ValidationError
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DocumentTooLarge, DuplicateKeyError, OperationFailure

from dao.clickstream_batches import ClickstreamBatches
from dao.clickstream_documents import (
    ClickstreamSession,
    EventRecord,
    IngestReport,
    Reject,
    SessionRecord,
    StoredEvent,
)
from dao.clickstream_validation import (
    ClickstreamLimits,
    RecordRejected,
    RejectedRecord,
    check_created_at,
    short,
    validate_record,
    validation_reason,
)

DUPLICATE_KEY = 11000
DEFAULT_CHUNK_SIZE = 1000

Record = Mapping[str, Any] | SessionRecord | EventRecord | RejectedRecord


def _conflict(identifier: str, what: str = "session") -> str:
    return f"{what} {short(identifier)} is already stored with different content ({what} ids are unique)"


def _bounded(message: Any, limit: int = 200) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _KnownSession:
    __slots__ = ("batch_id", "shown", "content_hash")

    def __init__(self, batch_id: str, shown: set[str], content_hash: str | None = None) -> None:
        self.batch_id, self.shown, self.content_hash = batch_id, shown, content_hash


class ClickstreamIngest(ClickstreamBatches):
    """Writes to ``self.sessions`` / ``self.events``; reserves session numbers in the open batch."""

    sessions: Collection
    events: Collection
    chunk_size: int
    limits: ClickstreamLimits

    if TYPE_CHECKING:  # provided by ClickstreamReading in ClickstreamDAO
        def get_session(self, session_id: str) -> ClickstreamSession | None: ...

    def ingest(
        self,
        records: Iterable[Record],
        *,
        chunk_size: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Validate and store ``records`` (sessions with nested ``events``, or bare events with a
        ``session_id``), ``chunk_size`` at a time. ``on_progress(n)`` is called with the number of
        records of each finished chunk. Reject indexes are 0-based positions in ``records``.
        Events must come after their session (the same chunk or a later one).

        Never raises for bad input: every record MongoDB or the engine cannot take (see
        ``dao/clickstream_validation.py``) is rejected with its index and reason; a
        :class:`~dao.clickstream_validation.RejectedRecord` in ``records`` (a line that did not
        parse) is rejected with its own reason."""
        size = chunk_size or self.chunk_size
        report = IngestReport()
        iterator = iter(enumerate(records))
        while chunk := list(islice(iterator, size)):
            report.merge(self._ingest_chunk(chunk))
            if on_progress is not None:
                on_progress(len(chunk))
        report.rejects.sort(key=lambda reject: reject.index)
        return report

    def register_session(self, session: Record) -> ClickstreamSession:
        """Store one session (and its nested events); returns it as stored. A session id already
        stored with the same content returns the stored session. Raises ``ValueError`` when the
        session is rejected."""
        report = self.ingest([session])
        session_rejects = [r for r in report.rejects if not r.reason.startswith("event ")]
        if session_rejects:
            raise ValueError(session_rejects[0].reason)
        session_id = session.session_id if isinstance(session, SessionRecord) else session["session_id"]
        stored = self.get_session(session_id)
        assert stored is not None
        return stored

    def push_events(self, events: Iterable[Record]) -> IngestReport:
        """Store events of stored sessions (each with ``session_id``); idempotent per ``event_id``."""
        return self.ingest(events)

    def _ingest_chunk(self, chunk: list[tuple[int, Any]]) -> IngestReport:
        report = IngestReport()
        sessions: list[tuple[int, SessionRecord]] = []
        loose_events: list[tuple[int, EventRecord]] = []
        for index, raw in chunk:
            try:
                record = validate_record(raw, self.limits)
            except RecordRejected as error:
                report.rejects.append(Reject(index, str(error)))
                continue
            if isinstance(record, SessionRecord):
                sessions.append((index, record))
            else:
                loose_events.append((index, record))

        referenced = {record.session_id for _, record in sessions}
        referenced |= {event.session_id for _, event in loose_events if event.session_id}
        known = self._known_sessions(referenced)

        # new sessions: first occurrence of an id not stored yet; a repeat must have the same content
        new: list[tuple[int, SessionRecord]] = []
        first_hash: dict[str, str] = {}
        conflicting: set[int] = set()
        for index, record in sessions:
            digest = record.content_hash()
            stored = known.get(record.session_id)
            earlier = stored.content_hash if stored is not None else first_hash.get(record.session_id)
            if stored is None and record.session_id not in first_hash:
                new.append((index, record))
                first_hash[record.session_id] = digest
            elif earlier is None or earlier == digest:
                report.duplicate_sessions += 1
            else:
                conflicting.add(index)
                report.rejects.append(Reject(index, _conflict(record.session_id)))
        if new:
            conflicting |= self._insert_sessions(new, known, report)

        # events: nested ones take their session's id; all are checked against the shown results
        to_insert: list[tuple[int, StoredEvent]] = []
        for index, record in sessions:
            if index in conflicting or record.session_id not in known:
                continue  # the session itself was rejected: its reject covers the events
            nested_ids: set[str] = set()
            for position, raw_event in enumerate(record.events):
                event = self._nested_event(index, position, record, raw_event, report)
                if event is None:
                    continue
                if event.event_id in nested_ids:
                    report.rejects.append(Reject(index, f"event {short(event.event_id)}: event_id repeats within its session"))
                    continue
                nested_ids.add(event.event_id)
                to_insert.append((index, event))
        for index, event in loose_events:
            if not event.session_id:
                report.rejects.append(Reject(index, f"event {short(event.event_id)}: no session_id"))
                continue
            to_insert.append((index, StoredEvent.model_validate(event.model_dump())))
        self._insert_events(to_insert, known, report)
        return report

    def _nested_event(
        self, index: int, position: int, record: SessionRecord, raw: Any, report: IngestReport
    ) -> StoredEvent | None:
        if not isinstance(raw, Mapping):
            report.rejects.append(Reject(index, f"event #{position}: not a JSON object"))
            return None
        label = short(raw["event_id"]) if isinstance(raw.get("event_id"), str) else f"#{position}"
        try:
            event = EventRecord.model_validate(raw)
            check_created_at(event.created_at, self.limits)
        except ValidationError as error:
            report.rejects.append(Reject(index, validation_reason(error, prefix=f"event {label}: ")))
            return None
        except RecordRejected as error:
            report.rejects.append(Reject(index, f"event {label}: {error}"))
            return None
        if event.session_id is not None and event.session_id != record.session_id:
            report.rejects.append(Reject(index, f"event {label}: session_id {short(event.session_id)} is not its session's"))
            return None
        return StoredEvent.model_validate({**event.model_dump(), "session_id": record.session_id})

    def _known_sessions(self, session_ids: set[str]) -> dict[str, _KnownSession]:
        if not session_ids:
            return {}
        cursor = self.sessions.find(
            {"session_id": {"$in": sorted(session_ids)}},
            {"_id": 0, "session_id": 1, "batch_id": 1, "search_results": 1, "content_hash": 1},
        ).batch_size(max(len(session_ids), 1))
        return {
            doc["session_id"]: _KnownSession(
                doc["batch_id"], {r["object_id"] for r in doc.get("search_results", [])}, doc.get("content_hash")
            )
            for doc in cursor
        }

    def _insert_many(self, collection, docs: list[dict]) -> dict[int, dict]:
        """``insert_many(ordered=False)``; returns the write errors by position. A driver-side error
        (a document the driver cannot encode: validation should have refused it) falls back to one
        insert per document, so one bad document costs only itself."""
        try:
            collection.insert_many(docs, ordered=False)
            return {}
        except BulkWriteError as error:
            return {item["index"]: item for item in error.details.get("writeErrors", [])}
        except (InvalidDocument, DocumentTooLarge, OverflowError, UnicodeEncodeError, ValueError):
            pass
        failed: dict[int, dict] = {}
        for position, doc in enumerate(docs):
            try:
                collection.insert_one(doc)
            except DuplicateKeyError:
                failed[position] = {"code": DUPLICATE_KEY}
            except (InvalidDocument, DocumentTooLarge, OverflowError, UnicodeEncodeError, ValueError) as error:
                failed[position] = {"code": -1, "errmsg": f"the driver cannot encode it ({type(error).__name__})"}
            except OperationFailure as error:
                failed[position] = {"code": error.code, "errmsg": f"the server refused it (code {error.code})"}
        return failed

    def _insert_sessions(
        self, new: list[tuple[int, SessionRecord]], known: dict[str, _KnownSession], report: IngestReport
    ) -> set[int]:
        """Insert the new sessions; returns the indexes of those that lost a race to a session with
        the same id but other content (rejected)."""
        batch_id, first_number = self._reserve_numbers(len(new))
        inserted = 0
        conflicting: set[int] = set()
        try:
            docs = []
            for offset, (_, record) in enumerate(new):
                doc = record.model_dump(exclude={"events", "batch_id", "session_number"})
                doc["search_results"] = [r.model_dump() for r in record.search_results]
                doc.update(batch_id=batch_id, session_number=first_number + offset, content_hash=record.content_hash())
                docs.append(doc)
            failed = self._insert_many(self.sessions, docs)
            raced: list[tuple[int, SessionRecord]] = []
            for position, (index, record) in enumerate(new):
                problem = failed.get(position)
                if problem is None:
                    inserted += 1
                    known[record.session_id] = _KnownSession(batch_id, record.shown_object_ids(), docs[position]["content_hash"])
                elif problem.get("code") == DUPLICATE_KEY:
                    raced.append((index, record))  # stored meanwhile by a concurrent ingest
                else:
                    report.rejects.append(Reject(index, f"session not stored: {_bounded(problem.get('errmsg', 'write error'))}"))
            if raced:
                known.update(self._known_sessions({record.session_id for _, record in raced}))
                for index, record in raced:
                    stored = known.get(record.session_id)
                    if stored is None or stored.content_hash in (None, record.content_hash()):
                        report.duplicate_sessions += 1
                    else:
                        conflicting.add(index)
                        report.rejects.append(Reject(index, _conflict(record.session_id)))
            report.accepted_sessions += inserted
            if batch_id not in report.batch_ids:
                report.batch_ids.append(batch_id)
        finally:
            self.batches.update_one({"_id": batch_id}, {"$inc": {"writers": -1, "session_count": inserted}})
        return conflicting

    def _insert_events(self, items: list[tuple[int, StoredEvent]], known: dict[str, _KnownSession], report: IngestReport) -> None:
        docs: list[dict] = []
        origins: list[int] = []
        seen: dict[str, str] = {}
        batches_of: list[str] = []
        for index, event in items:
            session = known.get(event.session_id)
            if session is None:
                report.rejects.append(Reject(index, f"event {short(event.event_id)}: unknown session {short(event.session_id)}"))
                continue
            if event.object_id not in session.shown:
                report.rejects.append(Reject(
                    index,
                    f"event {short(event.event_id)}: object {short(event.object_id)} was not shown in session {short(event.session_id)}",
                ))
                continue
            digest = event.content_hash()
            if event.event_id in seen:
                if seen[event.event_id] == digest:
                    report.duplicate_events += 1
                else:
                    report.rejects.append(Reject(index, _conflict(event.event_id, "event")))
                continue
            seen[event.event_id] = digest
            docs.append({**event.model_dump(), "content_hash": digest})
            origins.append(index)
            batches_of.append(session.batch_id)
        if not docs:
            return
        failed = self._insert_many(self.events, docs)
        duplicates = [position for position, problem in failed.items() if problem.get("code") == DUPLICATE_KEY]
        stored_hash: dict[str, str | None] = {}
        if duplicates:
            ids = sorted({docs[position]["event_id"] for position in duplicates})
            stored_hash = {
                doc["event_id"]: doc.get("content_hash")
                for doc in self.events.find({"event_id": {"$in": ids}}, {"_id": 0, "event_id": 1, "content_hash": 1})
            }
        per_batch: dict[str, int] = defaultdict(int)
        for position, (index, batch_id) in enumerate(zip(origins, batches_of)):
            problem = failed.get(position)
            if problem is None:
                report.accepted_events += 1
                per_batch[batch_id] += 1
            elif problem.get("code") == DUPLICATE_KEY:
                earlier = stored_hash.get(docs[position]["event_id"])
                if earlier is None or earlier == docs[position]["content_hash"]:
                    report.duplicate_events += 1
                else:
                    report.rejects.append(Reject(index, _conflict(docs[position]["event_id"], "event")))
            else:
                report.rejects.append(Reject(
                    index, f"event {short(docs[position]['event_id'])} not stored: {_bounded(problem.get('errmsg', 'write error'))}"
                ))
        for batch_id, count in per_batch.items():
            self.batches.update_one({"_id": batch_id}, {"$inc": {"event_count": count}})
