"""Clickstream data access: ingest sessions and events, release batches, read a batch page by page.

    dao = ClickstreamDAO(db)                      # a pymongo Database; creates its indexes
    report = dao.ingest(records)                  # dicts in the JSONL import format
    batch = dao.release("nightly-2024-05-01")     # idempotent per release id
    for session in dao.iter_batch(batch.batch_id):
        session.search_query, session.search_results, session.events

Contract:
- **Validation**: every record goes through the hostile-input checks
  (``dao/clickstream_validation.py``: depth, key names, Unicode, NUL, 64-bit integers, sizes, dates)
  and pydantic (``dao/clickstream_documents.py``); a bad record is rejected with its input index and
  a reason, never silently dropped, and ingest never raises for bad input. An event whose session is
  unknown, or whose object was not shown in that session, is rejected; so is an event id repeated
  inside one session. A session or event id already stored with the same content counts as a
  duplicate (idempotent re-import); with other content it is rejected (``content_hash``).
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
from bson.errors import InvalidDocument
from pymongo.errors import BulkWriteError, DocumentTooLarge, DuplicateKeyError, OperationFailure

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
from dao.clickstream_validation import (
    ClickstreamLimits,
    RecordRejected,
    RejectedRecord,
    check_created_at,
    short,
    validate_record,
    validation_reason,
)

logger = logging.getLogger(__name__)

SESSIONS = "clickstream_sessions"
EVENTS = "clickstream_events"
BATCHES = "clickstream_batches"
OPEN = "open"
DUPLICATE_KEY = 11000
DEFAULT_PAGE_SIZE = 1000
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


class ClickstreamDAO:
    """Sessions, events and batches in ``db`` (collections ``clickstream_sessions``,
    ``clickstream_events``, ``clickstream_batches``).

    Args:
        db: a pymongo database.
        chunk_size: records validated and written per round trip by :meth:`ingest` (default 1000).
        release_drain_timeout_s: how long :meth:`release` waits for in-flight ingest calls into
            the batch to finish (default 30 s; a crashed writer cannot block a release forever).
        ensure_indexes: create the indexes on construction (default True; idempotent).
        limits: size, depth and date bounds of a record (default :class:`ClickstreamLimits` from
            the ``CLICKTUNE_CLICKSTREAM_*`` environment).
    """

    def __init__(
        self,
        db: Database,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        release_drain_timeout_s: float = 30.0,
        ensure_indexes: bool = True,
        limits: ClickstreamLimits | None = None,
    ) -> None:
        self.db = db
        self.sessions = db[SESSIONS]
        self.events = db[EVENTS]
        self.batches = db[BATCHES]
        self.chunk_size = chunk_size
        self.release_drain_timeout_s = release_drain_timeout_s
        self.limits = limits or ClickstreamLimits()
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
