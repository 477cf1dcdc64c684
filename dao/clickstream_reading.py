"""Clickstream reading: a session with its events, a batch page by page, JSONL export, the
irrelevant flag.

A mixin of :class:`~dao.clickstream.ClickstreamDAO` (which owns the collections). A batch page
costs two queries: the page's sessions (by ``session_number`` range) and one ``$in`` for their
events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Iterator

from pymongo import ASCENDING
from pymongo.collection import Collection

from dao.clickstream_batches import ClickstreamBatches
from dao.clickstream_documents import ClickstreamSession

DEFAULT_PAGE_SIZE = 1000


class ClickstreamReading(ClickstreamBatches):
    """Reads of ``self.sessions`` / ``self.events`` (and the one session flag, ``is_irrelevant``)."""

    sessions: Collection
    events: Collection

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
