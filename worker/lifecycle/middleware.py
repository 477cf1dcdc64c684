"""Dramatiq middleware for what Dramatiq itself cannot know about our task documents.

* :class:`TaskOutcome` — when Dramatiq gives up on a message (retries exhausted, or a message
  skipped, e.g. by ``AgeLimit``), the task it carried becomes ``failed`` with a detail instead
  of staying ``pending`` forever.
* :class:`LeaseReaper` — a thread in each worker process that takes back tasks whose lease
  expired (their worker died) and re-sends their message, so recovery does not wait for new
  messages or for Redis's own redelivery of unacked messages; and re-sends ``pending`` tasks whose
  message was lost (:mod:`dao.task_recovery`), stamping every message sent with its due time.

Both act only on actors that are registered task kinds (actor name = kind, first argument = task id).
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from pymongo.errors import PyMongoError

from dao.mongo import mongo_database
from dao.task_documents import TASK_KINDS, TaskStatus
from dao.task_outcome import after_broker_gave_up
from dao.task_recovery import record_send, resend_fields, take_due_resends
from dao.tasks import TasksDAO
from worker.lifecycle.errors import safe_detail
from worker.settings import Settings

log = logging.getLogger(__name__)


def _task_of(message: Any) -> tuple[str, str] | None:
    """(kind, task_id) carried by a message of a task actor, else ``None``."""
    if message.actor_name not in TASK_KINDS:
        return None
    task_id = message.args[0] if message.args else message.kwargs.get("task_id")
    return (message.actor_name, task_id) if isinstance(task_id, str) else None


class TaskOutcome(Middleware):
    """Conclude a ``pending`` task when Dramatiq drops its message (``failed``, or ``refused`` for a
    permanent error: :func:`dao.task_outcome.after_broker_gave_up`).

    Must come BEFORE ``Retries`` in the middleware list: Dramatiq runs ``after_*`` hooks in reverse
    order, and this one reads ``message.failed``, which ``Retries`` sets once ``max_retries`` is exhausted.

    Parameters:
      settings: where the task documents live (Mongo URL and database).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _conclude(self, message: Any, reason: str, exception: BaseException | None = None) -> None:
        target = _task_of(message)
        if target is None:
            return
        kind, task_id = target
        decision = after_broker_gave_up(reason, exception)
        try:
            dao = TasksDAO.for_kind(mongo_database(self.settings.mongo_url, self.settings.mongo_db), kind)
            if dao.transition(task_id, TaskStatus.pending, decision.status, detail=decision.detail):
                log.warning("%s %s: %s (%s)", kind, task_id, decision.status.value, decision.detail)
        except PyMongoError as exc:  # the lease reaper is the backstop
            log.error("%s %s: could not mark %s: %s", kind, task_id, decision.status.value, type(exc).__name__)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None or not message.failed:
            return
        retries = message.options.get("retries", 0)
        secrets = [self.settings.mongo_url, self.settings.redis_url]
        self._conclude(message, f"gave up after {retries} deliveries: {safe_detail(exception, secrets)}", exception)

    def after_skip_message(self, broker, message):
        if message.failed:
            self._conclude(message, "the message was dropped before it ran (older than max_message_age_ms)")


RESENDS_OPTION = "clicktune_resends"
"""Message option carrying how many times the re-send sweep has re-sent the task (for its spacing)."""


def resend_grace_s(settings: Settings) -> float:
    """How long a ``pending`` task may wait past its message's due time before it is re-sent: at
    least two leases, so a message still on its way to a worker is not duplicated at once."""
    return max(settings.resend_grace_s, 2 * settings.lease_seconds)


class LeaseReaper(Middleware):
    """Every ``settings.reaper_interval_s`` (± 20 % jitter), move tasks with an expired lease back to
    ``pending`` and re-send them (or to ``failed``/``canceled``, see ``TasksDAO.reap_expired``), and
    re-send ``pending`` tasks whose message is overdue by :func:`resend_grace_s` (a lost message:
    :mod:`dao.task_recovery`).

    Runs in each worker process from ``after_worker_boot`` to ``before_worker_shutdown``. Safe with many
    workers: each move is a compare-and-set. ``reap_once`` is public for tests and the CLI.
    ``after_enqueue`` (in every process with this broker, clients too) stamps each task message sent
    with its due time (send time + delay), which is what keeps a deferred task from being re-sent early.

    Parameters:
      settings: Mongo location and the interval.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker, worker):
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(broker,), name="lease-reaper", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker, worker):
        self._stop.set()

    def after_enqueue(self, broker, message, delay):
        target = _task_of(message)
        if target is None:
            return
        kind, task_id = target
        try:
            dao = TasksDAO.for_kind(mongo_database(self.settings.mongo_url, self.settings.mongo_db), kind)
            record_send(dao.collection, task_id, resend_grace_s(self.settings), delay_ms=delay or 0,
                        resends=int(message.options.get(RESENDS_OPTION, 0)))
        except PyMongoError as exc:  # the stamp of the previous send (or the reaper's) stays; the sweep is early
            log.warning("%s %s: could not record the send time: %s", kind, task_id, type(exc).__name__)

    def _loop(self, broker: dramatiq.Broker) -> None:
        while not self._stop.wait(self.settings.reaper_interval_s * random.uniform(0.8, 1.2)):
            try:
                self.reap_once(broker)
            except Exception:  # keep reaping after a Mongo/Redis hiccup
                log.exception("lease reaper pass failed")

    def reap_once(self, broker: dramatiq.Broker) -> int:
        """One pass over every task kind this broker has an actor for; returns how many were re-sent.

        A send that fails (Redis down) leaves the task ``pending`` with its re-send time set, so a
        later pass re-sends it; the error ends this pass (and is logged by the loop)."""
        db = mongo_database(self.settings.mongo_url, self.settings.mongo_db)
        grace = resend_grace_s(self.settings)
        resent = 0
        for kind in list(TASK_KINDS):
            if kind not in broker.get_declared_actors():
                continue
            dao = TasksDAO.for_kind(db, kind)
            for reaped in dao.reap_expired(pending_fields=resend_fields(grace)):
                log.warning("%s %s: lease expired -> %s", kind, reaped.task_id, reaped.status.value)
                if reaped.status is TaskStatus.pending:
                    self._send(broker, dao, kind, reaped.task_id)
                    resent += 1
            for task_id, resends in take_due_resends(dao.collection, grace):
                log.warning("%s %s: pending past its due time + %gs with no claim -> re-sent (%d)",
                            kind, task_id, grace, resends)
                self._send(broker, dao, kind, task_id, resends)
                resent += 1
        return resent

    @staticmethod
    def _send(broker: dramatiq.Broker, dao: TasksDAO, kind: str, task_id: str, resends: int = 0) -> None:
        options = {RESENDS_OPTION: resends} if resends else {}
        message = broker.get_actor(kind).send_with_options(args=(task_id,), **options)
        dao.set_broker_message_id(task_id, message.message_id, only_if_status=TaskStatus.pending)
