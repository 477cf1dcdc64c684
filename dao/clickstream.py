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

Modules: ``dao/clickstream_ingest.py`` (validate and write sessions and events),
``dao/clickstream_batches.py`` (open batch, number reservation, release),
``dao/clickstream_reading.py`` (sessions, batch pages, export); this module assembles them.
"""

from __future__ import annotations

from pymongo import ASCENDING
from pymongo.database import Database

from dao.clickstream_batches import OPEN, ClickstreamBatches
from dao.clickstream_ingest import DEFAULT_CHUNK_SIZE, DUPLICATE_KEY, ClickstreamIngest, Record
from dao.clickstream_reading import DEFAULT_PAGE_SIZE, ClickstreamReading
from dao.clickstream_validation import ClickstreamLimits

__all__ = [
    "BATCHES", "DEFAULT_CHUNK_SIZE", "DEFAULT_PAGE_SIZE", "DUPLICATE_KEY", "EVENTS", "OPEN", "SESSIONS",
    "ClickstreamBatches", "ClickstreamDAO", "ClickstreamIngest", "ClickstreamReading", "Record",
]

SESSIONS = "clickstream_sessions"
EVENTS = "clickstream_events"
BATCHES = "clickstream_batches"


class ClickstreamDAO(ClickstreamIngest, ClickstreamReading):
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
