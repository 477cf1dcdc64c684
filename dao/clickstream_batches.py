"""Clickstream batches: the one open batch, session-number reservation, release, listing.

A mixin of :class:`~dao.clickstream.ClickstreamDAO` (which owns the collections); the batch
contract (one open batch, numbers reserved with ``$inc``, release as a compare-and-set that drains
in-flight writers) is described in :mod:`dao.clickstream`.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Mapping

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from dao.clickstream_documents import BatchStatus, ClickstreamBatch, utcnow

logger = logging.getLogger("dao.clickstream")  # the DAO's logger, whichever mixin logs

OPEN = "open"


class ClickstreamBatches:
    """Batch operations on ``self.batches`` (the ``clickstream_batches`` collection)."""

    batches: Collection
    release_drain_timeout_s: float

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
