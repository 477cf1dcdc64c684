"""The task lease keeper: a thread that renews a running task's lease and signals what it sees.

It renews the lease and reports — cancel requested, lease lost, hard deadline passed — through
callbacks; it never writes a task's status (the runner does, through ``TasksDAO.transition``).
Use it as a context manager: the thread runs for the body of the ``with`` block.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from pymongo.errors import PyMongoError

from dao.tasks import LeaseLost, TasksDAO

log = logging.getLogger(__name__)


class TaskLeaseKeeper(threading.Thread):
    """Renew the lease of ``task_id`` every ``interval_s`` while the job runs.

    Parameters:
      dao: the kind's DAO.
      task_id, owner: the task and the lease owner that claimed it.
      lease_s: how long each renewal holds the task.
      interval_s: time between renewals (the heartbeat; must be well below ``lease_s``).
      hard_deadline: ``time.monotonic()`` value after which the keeper stops renewing and calls
        ``on_deadline`` — the backstop for a job stuck where Dramatiq's TimeLimit cannot interrupt
        it (a long C call). ``None`` = no backstop.
      on_cancel: called (from this thread) when the document says ``cancel_requested``.
      on_lost: called when the lease is gone (taken back after expiry, or the task ended).
      on_deadline: called once when ``hard_deadline`` passed.

    Mongo errors are logged and retried at the next beat: a short outage does not stop the job,
    a long one lets the lease expire and another worker take the task back.
    """

    def __init__(self, dao: TasksDAO, task_id: str, owner: str, *, lease_s: float, interval_s: float,
                 hard_deadline: float | None, on_cancel: Callable[[], None], on_lost: Callable[[], None],
                 on_deadline: Callable[[], None]) -> None:
        super().__init__(name=f"lease-{task_id[:8]}", daemon=True)
        self.dao, self.task_id, self.owner = dao, task_id, owner
        self.lease_s, self.interval_s, self.hard_deadline = lease_s, interval_s, hard_deadline
        self.on_cancel, self.on_lost, self.on_deadline = on_cancel, on_lost, on_deadline
        self._stop_event = threading.Event()

    def __enter__(self) -> "TaskLeaseKeeper":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=max(5.0, self.interval_s * 2))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            if self.hard_deadline is not None and time.monotonic() > self.hard_deadline:
                self.on_deadline()
                return
            try:
                cancel = self.dao.heartbeat(self.task_id, self.owner, self.lease_s)
            except LeaseLost:
                log.warning("task %s: lease lost (owner %s); the job must stop", self.task_id, self.owner)
                self.on_lost()
                return
            except PyMongoError as exc:
                log.warning("task %s: heartbeat failed (%s); retrying", self.task_id, type(exc).__name__)
                continue
            if cancel:
                self.on_cancel()
