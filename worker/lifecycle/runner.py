"""``run_task``: the one place where a task's status changes while it runs.

Job contract — a job is a plain function::

    def run(ctx: TaskContext) -> dict:
        ctx.progress("loading", 0.0)
        for step in ...:
            ctx.raise_if_canceled()          # between units of work
            ...
        return {"best_run_id": ...}          # stored as the task's ``result``

* return a dict (JSON/BSON-able)          → ``done`` with that result
* raise ``TaskRefused(detail)``           → ``refused`` (bad input; never retried)
* raise ``TaskDeferred(detail, delay_ms)`` → back to ``pending`` with ``detail``, the message re-sent
  with that delay, the attempt not counted (e.g. a lock held by another task)
* raise ``TaskFailed(detail)``            → ``failed`` now, no retries (a permanent failure the job
  has already cleaned up after)
* ``ctx.raise_if_canceled()`` raised      → ``canceled`` (so does any other error raised after a cancel
  request, e.g. an MLflow wait cut short by it)
* an exception declaring ``permanent = True`` → ``refused`` at once with the reason
* any other exception (infrastructure)    → back to ``pending`` and re-raised, so Dramatiq retries it
  with backoff; once the task's attempts are used up → ``failed`` with a secret-free ``detail``
  (the rule: :func:`dao.task_outcome.after_failed_attempt`, shared with the reaper)
* Dramatiq's time limit interrupts it     → ``failed`` ("time limit … exceeded"), never retried
* worker shutdown interrupts it           → back to ``pending``, re-raised (retried elsewhere)

Sequence: claim (atomic; a redelivered message whose task is held by a live lease, or is
terminal, does nothing) → lease keeper thread (heartbeat renews the lease, relays cancel) →
``job(ctx)`` → one compare-and-set to the outcome (a lost race is logged, never overwritten).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable

from dramatiq.middleware import CurrentMessage, Shutdown, TimeLimitExceeded
from pydantic import ValidationError
from pymongo.database import Database

from dao.mongo import mongo_database
from dao.task_documents import TaskStatus
from dao.task_outcome import after_failed_attempt, is_permanent
from dao.tasks import LeaseLost, TasksDAO
from worker.lifecycle.context import TaskContext
from worker.lifecycle.errors import TaskCanceled, TaskDeferred, TaskFailed, TaskRefused, redacted_detail, safe_detail
from worker.lifecycle.heartbeat import TaskLeaseKeeper
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

Job = Callable[[TaskContext], "dict[str, Any] | None"]


def lease_owner_id() -> str:
    """Unique per run: host, pid, thread and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def _secrets(settings: Settings) -> list:
    return [settings.mongo_url, settings.redis_url]


def _time_limit_s(kind: str, settings: Settings) -> float:
    """The Dramatiq time limit that applies to the message being processed (message option first)."""
    message = CurrentMessage.get_current_message()
    if message is not None and message.options.get("time_limit"):
        return float(message.options["time_limit"]) / 1000
    return settings.time_limit_s(kind)


def run_task(kind: str, task_id: str, job: Job, *, settings: Settings | None = None,
             db: Database | None = None) -> TaskStatus | None:
    """Run ``job`` for task ``task_id`` of ``kind`` under a lease. Returns the status it ended in,
    or ``None`` when there was nothing to do (not claimable) or the lease was lost."""
    settings = settings or get_settings()
    db = db if db is not None else mongo_database(settings.mongo_url, settings.mongo_db)
    dao = TasksDAO.for_kind(db, kind)
    owner = lease_owner_id()
    secrets = _secrets(settings)

    raw = dao.claim_raw(task_id, owner, settings.lease_seconds)
    if raw is None:
        log.info("%s %s: not claimable (held by a live lease, finished, or unknown); nothing to do", kind, task_id)
        return None
    try:
        task = dao.parse(raw)
    except ValidationError as exc:
        detail = f"stored request is invalid: {safe_detail(exc, secrets)}"
        dao.finish(task_id, owner, TaskStatus.refused, detail=detail)
        return TaskStatus.refused
    if task.attempt > task.max_attempts:  # the previous attempt's worker died and none is left
        decision = after_failed_attempt(task.attempt - 1, task.max_attempts,
                                        "the last attempt's worker stopped renewing its lease")
        dao.finish(task_id, owner, decision.status, detail=decision.detail)
        return decision.status
    if task.cancel_requested:
        dao.finish(task_id, owner, TaskStatus.canceled, detail="canceled on request")
        return TaskStatus.canceled

    ctx = TaskContext(kind, task, settings, db, dao, owner)
    time_limit_s = _time_limit_s(kind, settings)
    grace = max(settings.lease_seconds, 2 * settings.heartbeat_seconds)

    def deadline_passed() -> None:  # the job ignored its time limit: end the task, drop its result
        _finish(dao, task_id, owner, TaskStatus.failed,
                detail="time limit exceeded and the job did not stop; the task was marked failed")
        ctx._mark_lease_lost()

    result: Any = None
    error: BaseException | None = None
    with TaskLeaseKeeper(dao, task_id, owner, lease_s=settings.lease_seconds, interval_s=settings.heartbeat_seconds,
                         hard_deadline=time.monotonic() + time_limit_s + grace, on_cancel=ctx._mark_cancel_requested,
                         on_lost=ctx._mark_lease_lost, on_deadline=deadline_passed):
        try:
            result = job(ctx)
        except BaseException as exc:  # concluded below, once the keeper has stopped
            error = exc
    if error is not None:
        return _after_error(kind, dao, ctx, owner, error, time_limit_s, secrets)
    if ctx.lease_lost:
        log.warning("%s %s: finished after its lease was lost; result dropped", kind, task_id)
        return None
    if result is None:
        result = {}
    if not isinstance(result, dict):
        return _finish(dao, task_id, owner, TaskStatus.failed,
                       detail=f"job returned {type(result).__name__}, expected a dict of result fields")
    return _finish(dao, task_id, owner, TaskStatus.done, result=result)


def _after_error(kind: str, dao: TasksDAO, ctx: TaskContext, owner: str, error: BaseException,
                 time_limit_s: float, secrets: list) -> TaskStatus | None:
    """The status a job's exception leads to (see the module docstring); re-raises what Dramatiq must retry."""
    task = ctx.task
    task_id, attempt = task.id, f"attempt {task.attempt}/{task.max_attempts}"
    if isinstance(error, TaskRefused):
        return _finish(dao, task_id, owner, TaskStatus.refused, detail=redacted_detail(error.detail, secrets))
    if isinstance(error, TaskCanceled):
        return _finish(dao, task_id, owner, TaskStatus.canceled, detail="canceled on request")
    if isinstance(error, TaskDeferred):
        return _defer(kind, dao, task_id, task.attempt, owner, error, redacted_detail(error.detail, secrets))
    if isinstance(error, TaskFailed):
        return _finish(dao, task_id, owner, TaskStatus.failed, detail=redacted_detail(error.detail, secrets))
    if isinstance(error, LeaseLost) or ctx.lease_lost:  # whatever it raised, the task is another owner's
        log.warning("%s %s: lease lost during %s; leaving the task to its new owner", kind, task_id, attempt)
        return None
    if isinstance(error, TimeLimitExceeded):
        return _finish(dao, task_id, owner, TaskStatus.failed, detail=f"time limit of {time_limit_s:g}s exceeded ({attempt})")
    if isinstance(error, Shutdown):
        dao.release(task_id, owner, detail=f"worker shut down during {attempt}; retrying")
        raise error
    if not isinstance(error, Exception):
        raise error
    decision = after_failed_attempt(task.attempt, task.max_attempts, f"{attempt} failed: {safe_detail(error, secrets)}",
                                    permanent=is_permanent(error), cancel_requested=ctx.cancel_requested)
    if decision.retry:
        dao.release(task_id, owner, detail=decision.detail)
        raise error
    log.error("%s %s: %s", kind, task_id, decision.detail)
    return _finish(dao, task_id, owner, decision.status, detail=decision.detail)


def _defer(kind: str, dao: TasksDAO, task_id: str, attempt: int, owner: str, deferred: TaskDeferred,
           detail: str) -> TaskStatus | None:
    """Re-send the task's message with ``deferred.delay_ms``, then put the task back to ``pending``.

    The message goes first: if sending fails the task is released to ``pending`` and the error
    re-raised, so Dramatiq retries the delivery as for any infrastructure error. The claim's
    ``attempt`` increment is undone.
    """
    import dramatiq

    try:
        actor = dramatiq.get_broker().get_actor(kind)
        message = actor.send_with_options(args=(task_id,), delay=deferred.delay_ms)
    except Exception as exc:
        dao.release(task_id, owner, detail=f"{detail}; re-sending failed ({safe_detail(exc)}); retrying")
        raise
    moved = dao.transition(task_id, TaskStatus.processing, TaskStatus.pending, owner=owner,
                           detail=f"{detail}; retrying in {deferred.delay_ms / 1000:g}s",
                           attempt=max(0, attempt - 1), broker_message_id=message.message_id)
    log.info("%s %s deferred by %d ms (%s); moved=%s", kind, task_id, deferred.delay_ms, detail, moved)
    return TaskStatus.pending if moved else None


def _finish(dao: TasksDAO, task_id: str, owner: str, status: TaskStatus, *, detail: str | None = None,
            result: dict[str, Any] | None = None) -> TaskStatus | None:
    if dao.finish(task_id, owner, status, detail=detail, result=result):
        return status
    log.warning("task %s: could not record %s (lease lost to another owner or task already finished)",
                task_id, status.value)
    return None
