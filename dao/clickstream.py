"""Clickstream data access: ingest sessions and events, release batches, read a batch page by page.

    dao = ClickstreamDAO(db)                      # a pymongo Database; creates its indexes
    report = dao.ingest(records)                  # dicts in the JSONL import format
    batch = dao.release("nightly-2024-05-01")     # idempotent per release id
    for session in dao.iter_batch(batch.batch_id):
        session.search_query, session.search_results, session.events

Contract:
- **Validation**: every record goes through pydantic (``dao/clickstream_documents.py``); a bad
  record is rejected with its input index and a reason, never silently dropped. An event whose
  session is unknown, or whose object was not shown in that session, is rejected. A session or
  event id already stored counts as a duplicate (idempotent re-import), not as an error.
- **Batches**: exactly one batch is open at a time (a unique sparse index on ``open_marker``).
  A new session takes the next ``session_number`` of the open batch: numbers are reserved with
  one atomic ``find_one_and_update`` + ``$inc`` per ingest chunk, so concurrent writers never share
  a number (a failed insert may leave a gap; order is what matters). No open batch → the next
  session opens one.
- **Release** is a compare-and-set of the open batch to ``released`` with the ``release_id``
  (unique sparse index): concurrent releases with the same id release one batch and both get it;
  a repeated release returns the batch it released the first time. A release waits (bounded)
  until ingest calls that reserved numbers in the batch have finished writing, so a released
  batch's session set no longer changes. Events may still arrive later for its sessions (late
  clicks are facts; they attach to their session).
- **Reading**: :meth:`ClickstreamDAO.iter_batch` pages sessions by ``session_number`` range and
  fetches each page's events with one ``$in`` query — two queries per page, whatever the number
  of sessions in it.
- Only portable MongoDB operations (insert_many unordered, find/sort/limit, ``$in``,
  find_one_and_update ``$inc``, update_one CAS): the same code runs on MongoDB and nx-27017.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from itertools import islice
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

from bson import ObjectId
from pydantic import ValidationError
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from dao.clickstream_documents import (
    BatchStatus,
    ClickstreamBatch,
    ClickstreamSession,
    EventRecord,
    IngestReport,
    Reject,
    SessionRecord,
    StoredEvent,
    utcnow,
)

logger = logging.getLogger(__name__)

SESSIONS = "clickstream_sessions"
EVENTS = "clickstream_events"
BATCHES = "clickstream_batches"
OPEN = "open"
DUPLICATE_KEY = 11000
DEFAULT_PAGE_SIZE = 1000
DEFAULT_CHUNK_SIZE = 1000

Record = Mapping[str, Any] | SessionRecord | EventRecord


def _reason(error: ValidationError, prefix: str = "") -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(part) for part in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    more = f" (+{error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return prefix + "; ".join(parts) + more


class _KnownSession:
    __slots__ = ("batch_id", "shown")

    def __init__(self, batch_id: str, shown: set[str]) -> None:
        self.batch_id, self.shown = batch_id, shown


class ClickstreamDAO:
    """Sessions, events and batches in ``db`` (collections ``clickstream_sessions``,
    ``clickstream_events``, ``clickstream_batches``).

    Args:
        db: a pymongo database.
        chunk_size: records validated and written per round trip by :meth:`ingest` (default 1000).
        release_drain_timeout_s: how long :meth:`release` waits for in-flight ingest calls into
            the batch to finish (default 30 s; a crashed writer cannot block a release forever).
        ensure_indexes: create the indexes on construction (default True; idempotent).
    """

    def __init__(
        self,
        db: Database,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        release_drain_timeout_s: float = 30.0,
        ensure_indexes: bool = True,
    ) -> None:
        self.db = db
        self.sessions = db[SESSIONS]
        self.events = db[EVENTS]
        self.batches = db[BATCHES]
        self.chunk_size = chunk_size
        self.release_drain_timeout_s = release_drain_timeout_s
        if ensure_indexes:
            self.ensure_indexes()

    def ensure_indexes(self) -> None:
        """Unique ``session_id`` / ``event_id``, ``(batch_id, session_number)`` for paging,
        ``session_id`` on events for the per-page ``$in``, and the batch invariants."""
        self.sessions.create_index("session_id", unique=True)
        self.sessions.create_index([("batch_id", ASCENDING), ("session_number", ASCENDING)], unique=True)
        self.events.create_index("event_id", unique=True)
        self.events.create_index("session_id")
        self.batches.create_index("batch_id", unique=True)
        self.batches.create_index("open_marker", unique=True, sparse=True)
        self.batches.create_index("release_id", unique=True, sparse=True)

    # ------------------------------------------------------------------ ingest
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
        Events must come after their session (the same chunk or a later one)."""
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
        stored returns the stored session. Raises ``ValueError`` when the session is rejected."""
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
                if isinstance(raw, SessionRecord):
                    sessions.append((index, raw))
                elif isinstance(raw, EventRecord):
                    loose_events.append((index, raw))
                elif not isinstance(raw, Mapping):
                    report.rejects.append(Reject(index, f"not a JSON object but {type(raw).__name__}"))
                elif "search_query" in raw or "search_results" in raw:
                    sessions.append((index, SessionRecord.model_validate(raw)))
                elif "event_id" in raw:
                    loose_events.append((index, EventRecord.model_validate(raw)))
                else:
                    report.rejects.append(Reject(index, "neither a session (search_query) nor an event (event_id)"))
            except ValidationError as error:
                report.rejects.append(Reject(index, _reason(error)))

        referenced = {record.session_id for _, record in sessions}
        referenced |= {event.session_id for _, event in loose_events if event.session_id}
        known = self._known_sessions(referenced)

        # new sessions: first occurrence of an id not stored yet
        new: list[tuple[int, SessionRecord]] = []
        new_ids: set[str] = set()
        for index, record in sessions:
            if record.session_id in known or record.session_id in new_ids:
                report.duplicate_sessions += 1
            else:
                new.append((index, record))
                new_ids.add(record.session_id)
        if new:
            self._insert_sessions(new, known, report)

        # events: nested ones take their session's id; all are checked against the shown results
        to_insert: list[tuple[int, StoredEvent]] = []
        for index, record in sessions:
            if record.session_id not in known:
                continue  # the session itself was rejected: its reject covers the events
            for position, raw_event in enumerate(record.events):
                event = self._nested_event(index, position, record, raw_event, report)
                if event is not None:
                    to_insert.append((index, event))
        for index, event in loose_events:
            if not event.session_id:
                report.rejects.append(Reject(index, f"event {event.event_id}: no session_id"))
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
        try:
            event = EventRecord.model_validate(raw)
        except ValidationError as error:
            label = raw.get("event_id") or f"#{position}"
            report.rejects.append(Reject(index, _reason(error, prefix=f"event {label}: ")))
            return None
        if event.session_id is not None and event.session_id != record.session_id:
            report.rejects.append(Reject(index, f"event {event.event_id}: session_id {event.session_id!r} is not its session's"))
            return None
        return StoredEvent.model_validate({**event.model_dump(), "session_id": record.session_id})

    def _known_sessions(self, session_ids: set[str]) -> dict[str, _KnownSession]:
        if not session_ids:
            return {}
        cursor = self.sessions.find(
            {"session_id": {"$in": sorted(session_ids)}},
            {"_id": 0, "session_id": 1, "batch_id": 1, "search_results": 1},
        ).batch_size(max(len(session_ids), 1))
        return {
            doc["session_id"]: _KnownSession(doc["batch_id"], {r["object_id"] for r in doc.get("search_results", [])})
            for doc in cursor
        }

    def _insert_sessions(self, new: list[tuple[int, SessionRecord]], known: dict[str, _KnownSession], report: IngestReport) -> None:
        batch_id, first_number = self._reserve_numbers(len(new))
        inserted = 0
        try:
            docs = []
            for offset, (_, record) in enumerate(new):
                doc = record.model_dump(exclude={"events", "batch_id", "session_number"})
                doc["search_results"] = [r.model_dump() for r in record.search_results]
                doc.update(batch_id=batch_id, session_number=first_number + offset)
                docs.append(doc)
            failed: dict[int, dict] = {}
            try:
                self.sessions.insert_many(docs, ordered=False)
            except BulkWriteError as error:
                failed = {item["index"]: item for item in error.details.get("writeErrors", [])}
            raced: list[str] = []
            for position, (index, record) in enumerate(new):
                problem = failed.get(position)
                if problem is None:
                    inserted += 1
                    known[record.session_id] = _KnownSession(batch_id, record.shown_object_ids())
                elif problem.get("code") == DUPLICATE_KEY:
                    report.duplicate_sessions += 1  # stored meanwhile by a concurrent ingest
                    raced.append(record.session_id)
                else:
                    report.rejects.append(Reject(index, f"session not stored: {problem.get('errmsg', 'write error')}"))
            known.update(self._known_sessions(set(raced)))
            report.accepted_sessions += inserted
            if batch_id not in report.batch_ids:
                report.batch_ids.append(batch_id)
        finally:
            self.batches.update_one({"_id": batch_id}, {"$inc": {"writers": -1, "session_count": inserted}})

    def _insert_events(self, items: list[tuple[int, StoredEvent]], known: dict[str, _KnownSession], report: IngestReport) -> None:
        docs: list[dict] = []
        origins: list[int] = []
        seen: set[str] = set()
        batches_of: list[str] = []
        for index, event in items:
            session = known.get(event.session_id)
            if session is None:
                report.rejects.append(Reject(index, f"event {event.event_id}: unknown session {event.session_id}"))
                continue
            if event.object_id not in session.shown:
                report.rejects.append(
                    Reject(index, f"event {event.event_id}: object {event.object_id} was not shown in session {event.session_id}")
                )
                continue
            if event.event_id in seen:
                report.duplicate_events += 1
                continue
            seen.add(event.event_id)
            docs.append(event.model_dump())
            origins.append(index)
            batches_of.append(session.batch_id)
        if not docs:
            return
        failed: dict[int, dict] = {}
        try:
            self.events.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            failed = {item["index"]: item for item in error.details.get("writeErrors", [])}
        per_batch: dict[str, int] = defaultdict(int)
        for position, (index, batch_id) in enumerate(zip(origins, batches_of)):
            problem = failed.get(position)
            if problem is None:
                report.accepted_events += 1
                per_batch[batch_id] += 1
            elif problem.get("code") == DUPLICATE_KEY:
                report.duplicate_events += 1
            else:
                report.rejects.append(Reject(index, f"event {docs[position]['event_id']} not stored: {problem.get('errmsg', 'write error')}"))
        for batch_id, count in per_batch.items():
            self.batches.update_one({"_id": batch_id}, {"$inc": {"event_count": count}})

    # ------------------------------------------------------------------ batches
    def _reserve_numbers(self, count: int) -> tuple[str, int]:
        """Reserve ``count`` consecutive session numbers in the open batch (opening one if
        needed) and register as a writer of it. Returns ``(batch_id, first_number)``."""
        for _ in range(50):
            doc = self.batches.find_one_and_update(
                {"open_marker": OPEN},
                {"$inc": {"next_session_number": count, "writers": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return doc["_id"], int(doc["next_session_number"]) - count + 1
            self._open_batch()
        raise RuntimeError("could not reserve session numbers in an open clickstream batch")

    def _open_batch(self) -> None:
        batch_id = str(ObjectId())
        document = {
            "_id": batch_id,
            "batch_id": batch_id,
            "status": BatchStatus.open.value,
            "open_marker": OPEN,
            "created_at": utcnow(),
            "next_session_number": 0,
            "session_count": 0,
            "event_count": 0,
            "writers": 0,
        }
        try:
            self.batches.insert_one(document)
        except DuplicateKeyError:
            pass  # another writer opened one first: use it

    def open_batch(self) -> ClickstreamBatch | None:
        """The batch new sessions currently land in (None before the first session after a release)."""
        return self._batch(self.batches.find_one({"open_marker": OPEN}))

    def release(self, release_id: str | None = None) -> ClickstreamBatch | None:
        """Release the open batch under ``release_id`` (a fresh id when None) and return it.

        Idempotent: a release id that already released a batch returns that batch, however many
        times or concurrently it is called. Returns None when there is no open batch to release.
        """
        release_id = release_id or uuid.uuid4().hex
        for _ in range(50):
            done = self.batches.find_one({"release_id": release_id})
            if done is not None:
                return self._drained(done["_id"])
            current = self.batches.find_one({"open_marker": OPEN}, {"_id": 1})
            if current is None:
                done = self.batches.find_one({"release_id": release_id})
                return self._drained(done["_id"]) if done is not None else None
            try:
                result = self.batches.update_one(
                    {"_id": current["_id"], "open_marker": OPEN},
                    {
                        "$set": {"status": "released", "release_id": release_id, "released_at": utcnow()},
                        "$unset": {"open_marker": ""},
                    },
                )
            except DuplicateKeyError:
                continue  # the same release id won on another batch/caller: the next loop finds it
            if result.modified_count == 1:
                logger.info("released clickstream batch %s (release id %s)", current["_id"], release_id)
                return self._drained(current["_id"])
            # lost the race for this batch: loop and look again
        raise RuntimeError(f"could not release a clickstream batch for release id {release_id!r}")

    def _drained(self, batch_id: str) -> ClickstreamBatch:
        deadline = time.monotonic() + self.release_drain_timeout_s
        while True:
            batch = self.get_batch(batch_id)
            assert batch is not None
            if batch.writers <= 0 or time.monotonic() >= deadline:
                if batch.writers > 0:
                    logger.warning("batch %s released with %d writers still registered", batch_id, batch.writers)
                return batch
            time.sleep(0.05)

    def get_batch(self, batch_id: str) -> ClickstreamBatch | None:
        return self._batch(self.batches.find_one({"_id": batch_id}))

    def list_batches(self) -> list[ClickstreamBatch]:
        """Every batch, oldest first."""
        return [self._batch(doc) for doc in self.batches.find({}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])]

    @staticmethod
    def _batch(doc: Mapping[str, Any] | None) -> ClickstreamBatch | None:
        return ClickstreamBatch.model_validate(doc) if doc is not None else None

    # ------------------------------------------------------------------ sessions
    def mark_irrelevant(self, session_id: str, irrelevant: bool = True) -> bool:
        """Flag a session as irrelevant (the user found nothing useful); False if unknown."""
        return self.sessions.update_one({"session_id": session_id}, {"$set": {"is_irrelevant": irrelevant}}).matched_count == 1

    def get_session(self, session_id: str) -> ClickstreamSession | None:
        """A session with its events, or None."""
        doc = self.sessions.find_one({"session_id": session_id}, {"_id": 0})
        if doc is None:
            return None
        events = sorted(self.events.find({"session_id": session_id}, {"_id": 0}), key=lambda e: (e["created_at"], e["event_id"]))
        return ClickstreamSession.model_validate({**doc, "events": events})

    def iter_batch(self, batch_id: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[ClickstreamSession]:
        """Every session of the batch in ``session_number`` order, each with exactly its events
        (oldest first). Two queries per page: the page's sessions (by number range) and one
        ``$in`` query for their events."""
        for page in self.iter_batch_pages(batch_id, page_size=page_size):
            yield from page

    def iter_batch_pages(self, batch_id: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[list[ClickstreamSession]]:
        """Like :meth:`iter_batch`, a page (list of sessions) at a time."""
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        last = 0
        while True:
            docs = list(
                self.sessions.find({"batch_id": batch_id, "session_number": {"$gt": last}}, {"_id": 0})
                .sort("session_number", ASCENDING)
                .limit(page_size)
                .batch_size(page_size)
            )
            if not docs:
                return
            by_session: dict[str, list[dict]] = {doc["session_id"]: [] for doc in docs}
            cursor = self.events.find({"session_id": {"$in": list(by_session)}}, {"_id": 0}).batch_size(100_000)
            for event in cursor:
                by_session[event["session_id"]].append(event)
            page = []
            for doc in docs:
                events = by_session[doc["session_id"]]
                if len(events) > 1:
                    events.sort(key=lambda e: (e["created_at"], e["event_id"]))
                doc["events"] = events
                page.append(ClickstreamSession.model_validate(doc))
            yield page
            if len(docs) < page_size:
                return
            last = docs[-1]["session_number"]

    def export_batch(self, batch_id: str, target: str | Path | IO[str], page_size: int = DEFAULT_PAGE_SIZE) -> int:
        """Write the batch as JSONL (the import format plus ``batch_id``/``session_number``);
        returns the number of sessions written."""
        if self.get_batch(batch_id) is None:
            raise KeyError(f"no clickstream batch {batch_id!r}")
        if isinstance(target, (str, Path)):
            with Path(target).open("w", encoding="utf-8") as handle:
                return self.export_batch(batch_id, handle, page_size=page_size)
        count = 0
        for session in self.iter_batch(batch_id, page_size=page_size):
            target.write(json.dumps(session.model_dump(mode="json"), ensure_ascii=False) + "\n")
            count += 1
        return count
