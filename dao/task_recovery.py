"""Re-send sweep: find ``pending`` tasks whose message was lost and take the right to re-send them.

A ``pending`` task normally has a message in Redis that some worker will deliver. That message
can be lost: a send that failed while Redis was down (the lease reaper's re-send after taking a
task back), or a message prefetched by a worker that was then killed (Dramatiq's Redis broker
gives those back only after its own heartbeat timeout, and only when a maintenance pass runs).
Nothing else looks at a ``pending`` task again, so each task carries two integer fields:

* ``due_ms`` — epoch ms when its latest message becomes deliverable (send time + delay);
* ``resend_at_ms`` — after this instant, a task still ``pending`` is re-sent by the sweep:
  ``due_ms + grace × 2^resends`` (``resends`` = re-sends of the sweep so far, exponent capped),
  so a task waiting in a long backlog gets a logarithmic number of duplicates, not one per pass.

They are written whenever a message is sent (the ``after_enqueue`` hook of the worker's
middleware, with the message's delay: a deferred or backed-off task is never re-sent before its
due time) and when a task returns to ``pending`` before its message is sent (the lease reaper).
Integers, not datetimes: nx-27017 stores datetimes written by ``$set`` as strings.

A duplicate message is harmless: claims are compare-and-set, so a message for a task that is
claimed or finished does nothing. What a duplicate can do is run a task's next retry before its
backoff ends (if it is delivered while the task waits for that retry); attempts are still
counted on the document.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection

from dao.task_documents import TaskStatus, utcnow

MAX_RESEND_EXPONENT = 5
"""Spacing of re-sends stops doubling at grace × 32."""

_indexed: set[str] = set()


def now_ms() -> int:
    return int(utcnow().timestamp() * 1000)


def resend_fields(grace_s: float, *, delay_ms: int = 0, resends: int = 0, now: int | None = None) -> dict[str, Any]:
    """The ``$set`` fields for a message sent now with ``delay_ms`` (or a task made ``pending``
    whose message is about to be sent): when it is due and when the sweep may re-send it."""
    due = (now if now is not None else now_ms()) + max(0, int(delay_ms or 0))
    spacing = int(grace_s * 1000) * 2 ** min(resends, MAX_RESEND_EXPONENT)
    return {"due_ms": due, "resend_at_ms": due + spacing, "resends": resends}


def record_send(collection: Collection, task_id: str, grace_s: float, *, delay_ms: int = 0,
                resends: int = 0) -> bool:
    """Stamp the task (``pending``, or ``processing`` for a deferral whose message goes out before
    the task is released) with the times of the message just sent. ``False`` if no such task."""
    result = collection.update_one(
        {"_id": task_id, "status": {"$in": [TaskStatus.pending.value, TaskStatus.processing.value]}},
        {"$set": resend_fields(grace_s, delay_ms=delay_ms, resends=resends)},
    )
    return result.matched_count == 1


def take_due_resends(collection: Collection, grace_s: float, *, now: int | None = None,
                     limit: int = 100) -> list[tuple[str, int]]:
    """``pending`` tasks whose ``resend_at_ms`` passed: ``(task_id, resends)`` for each one this
    caller won (a compare-and-set on ``resend_at_ms`` moves it to the next, doubled spacing, so
    concurrent sweeps re-send a task once). The caller sends one message per task, with the
    ``resends`` count, and its ``after_enqueue`` stamp confirms the times."""
    if collection.full_name not in _indexed:
        collection.create_index([("status", ASCENDING), ("resend_at_ms", ASCENDING)], name="status_resend_at")
        _indexed.add(collection.full_name)
    current = now if now is not None else now_ms()
    candidates = collection.find(
        {"status": TaskStatus.pending.value, "resend_at_ms": {"$lt": current}},
        {"resend_at_ms": 1, "resends": 1},
    ).sort("resend_at_ms", ASCENDING).limit(limit)
    taken: list[tuple[str, int]] = []
    for raw in list(candidates):
        resends = int(raw.get("resends") or 0) + 1
        won = collection.update_one(
            {"_id": raw["_id"], "status": TaskStatus.pending.value, "resend_at_ms": raw["resend_at_ms"]},
            {"$set": resend_fields(grace_s, resends=resends, now=current)},
        )
        if won.modified_count == 1:
            taken.append((raw["_id"], resends))
    return taken
