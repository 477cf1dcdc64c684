"""Read the clickstream batch a fine-tuning task names.

``read_batch(db, batch_id, release_id)`` returns the batch's sessions as plain dicts (the shape
``finetuning.inputs.sessions_to_inputs`` takes). It never writes clickstream data except for one
thing: a batch that is still **open** is released first, under ``release_id`` (derived from the task
id, so a redelivered task releases nothing twice). Training must read a batch that no longer
changes — otherwise a retry would train on different data than the first attempt.

Unusable input raises :class:`~worker.lifecycle.TaskRefused`: an unknown batch, a batch without
sessions, a batch in which nobody clicked anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from pymongo.database import Database

from dao.clickstream import ClickstreamDAO
from dao.clickstream_documents import BatchStatus
from worker.lifecycle import TaskRefused

log = logging.getLogger(__name__)


@dataclass
class BatchSessions:
    """The sessions of a batch (dicts with ``events``) and what reading it found."""

    batch_id: str
    sessions: list[dict[str, Any]]
    released_by_task: bool
    clicks: int


def read_batch(db: Database, batch_id: str, release_id: str, page_size: int = 1000,
               on_page: Callable[[int], None] | None = None) -> BatchSessions:
    """Every session of ``batch_id`` (see module docstring). ``on_page(sessions_read)`` after each page."""
    dao = ClickstreamDAO(db, ensure_indexes=False)
    batch = dao.get_batch(batch_id)
    if batch is None:
        raise TaskRefused(f"clickstream batch {batch_id!r} does not exist")
    released_by_task = False
    if batch.status is BatchStatus.open:
        released = dao.release(release_id)
        if released is not None and released.batch_id != batch_id:
            # the named batch was released by someone else meanwhile and a newer one got released
            # under our id: harmless (releasing only closes a batch early), but worth a log line
            log.warning("release %s closed batch %s instead of %s", release_id, released.batch_id, batch_id)
        batch = dao.get_batch(batch_id)
        if batch is None or batch.status is BatchStatus.open:
            raise RuntimeError(f"clickstream batch {batch_id!r} is still open after release {release_id!r}")
        released_by_task = released is not None and released.batch_id == batch_id
    sessions: list[dict[str, Any]] = []
    clicks = 0
    for page in dao.iter_batch_pages(batch_id, page_size=page_size):
        for session in page:
            clicks += len(session.clicked_object_ids())
            sessions.append(session.model_dump(mode="python"))
        if on_page is not None:
            on_page(len(sessions))
    if not sessions:
        raise TaskRefused(f"clickstream batch {batch_id!r} holds no sessions")
    if clicks == 0:
        raise TaskRefused(f"clickstream batch {batch_id!r} has {len(sessions)} sessions but no clicks: "
                          "nothing to learn from")
    return BatchSessions(batch_id, sessions, released_by_task, clicks)
