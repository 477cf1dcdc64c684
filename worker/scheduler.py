"""Continuous operation: release the open clickstream batch and enqueue a fine-tuning task for a
model line when enough new sessions arrived, or when enough time passed.

    clicktune schedule            # checks every CLICKTUNE_SCHEDULE_TICK_S; run one or several
    clicktune schedule --once     # one check (cron-style)

Settings (``worker/settings.py``): ``schedule_model_line`` (unset = do nothing),
``schedule_embedding_model_id`` (start model, e.g. ``models:/<line>@blue``), ``schedule_min_sessions``
(fire when the open batch holds that many sessions), ``schedule_interval_s`` (or when that long
passed since the last firing and the open batch is not empty), ``schedule_options``
(FineTuningOptions), ``schedule_deploy_as_blue``.

Exactly once per window, however many schedulers run and however often they restart:

- the **window** is the open batch: its id makes the key ``schedule:<line>:<batch id>``, used both as
  the batch's ``release_id`` and as the task's ``idempotency_key`` — a repeated or concurrent firing
  for the same window releases the same batch and gets the same task (both operations are
  idempotent in the DAO);
- a **Redis lock** per model line (``<namespace>:schedule-lock:<line>``, with a TTL so a crashed
  holder cannot block forever) lets one instance fire at a time, so the others do not even try;
- a firing is recorded in the ``schedule_state`` collection (``pending_window`` before the release,
  ``last_window`` after the enqueue): a scheduler that died between the two finishes the same
  window at its next check, so a released batch is never left without its task.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from pymongo.database import Database

from dao.clickstream import ClickstreamDAO
from dao.clickstream_documents import ClickstreamBatch, UtcDatetime, utcnow
from dao.mongo import mongo_database
from dao.task_documents import as_utc
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

STATE_COLLECTION = "schedule_state"
LOCK_TIMEOUT_S = 300


class ScheduleConfig(BaseModel):
    """The policy, as configured."""

    enabled: bool
    model_line: str | None
    embedding_model_id: str | None
    min_sessions: int
    interval_s: float | None
    deploy_as_blue: bool
    tick_s: float
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> "ScheduleConfig":
        return cls(enabled=bool(settings.schedule_model_line and settings.schedule_embedding_model_id),
                   model_line=settings.schedule_model_line, embedding_model_id=settings.schedule_embedding_model_id,
                   min_sessions=settings.schedule_min_sessions, interval_s=settings.schedule_interval_s,
                   deploy_as_blue=settings.schedule_deploy_as_blue, tick_s=settings.schedule_tick_s,
                   options=settings.schedule_options)


class ScheduleState(BaseModel):
    """What the schedulers of a model line did last."""

    model_line: str
    pending_window: str | None = None
    last_window: str | None = None
    last_fired_at: UtcDatetime | None = None
    last_batch_id: str | None = None
    last_task_id: str | None = None
    last_reason: str | None = None


class TickOutcome(BaseModel):
    """One check: whether it fired, why (or why not), and what it released and enqueued."""

    fired: bool
    reason: str
    window: str | None = None
    batch_id: str | None = None
    task_id: str | None = None


class ScheduleView(BaseModel):
    """``GET /v1/schedule``: the policy, the last firing, and where the open batch stands."""

    config: ScheduleConfig
    state: ScheduleState | None
    open_batch_id: str | None
    open_batch_sessions: int
    due: str | None = Field(description="Why the next check would fire, or null.")


class Scheduler:
    """The policy of one model line. ``lock=False`` skips the Redis lock (tests of the
    idempotency keys alone)."""

    def __init__(self, settings: Settings | None = None, *, db: Database | None = None, client: Any = None,
                 redis_client: Any = None, lock: bool = True, clickstream: ClickstreamDAO | None = None) -> None:
        self.settings = settings or get_settings()
        self.config = ScheduleConfig.of(self.settings)
        self.db = db if db is not None else mongo_database(self.settings.mongo_url, self.settings.mongo_db)
        self.clickstream = clickstream or ClickstreamDAO(self.db)
        self._client = client
        self._redis = redis_client
        self.use_lock = lock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    @property
    def client(self):
        if self._client is None:
            from worker.client import ClicktuneClient

            self._client = ClicktuneClient(self.settings, db=self.db)
        return self._client

    @property
    def redis(self):
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.settings.redis_url.get_secret_value(), socket_timeout=5)
        return self._redis

    # ------------------------------------------------------------------ reading
    def state(self) -> ScheduleState | None:
        if not self.config.model_line:
            return None
        doc = self.db[STATE_COLLECTION].find_one({"_id": self.config.model_line})
        if doc is None:
            return None
        doc = {k: v for k, v in doc.items() if k != "_id"}
        return ScheduleState(model_line=self.config.model_line, **doc)

    def due(self, batch: ClickstreamBatch | None, state: ScheduleState | None, now: datetime | None = None) -> str | None:
        """Why the open batch should be released now, or ``None``."""
        if batch is None or batch.session_count <= 0:
            return None
        if batch.session_count >= self.config.min_sessions:
            return f"{batch.session_count} sessions >= {self.config.min_sessions}"
        if self.config.interval_s is not None:
            now = now or utcnow()
            since = state.last_fired_at if state and state.last_fired_at else as_utc(batch.created_at)
            if now - since >= timedelta(seconds=self.config.interval_s):
                return f"{(now - since).total_seconds():.0f} s since {'the last firing' if state and state.last_fired_at else 'the batch opened'} >= {self.config.interval_s:g} s"
        return None

    def view(self) -> ScheduleView:
        batch = self.clickstream.open_batch()
        state = self.state()
        return ScheduleView(config=self.config, state=state, open_batch_id=batch.batch_id if batch else None,
                            open_batch_sessions=batch.session_count if batch else 0,
                            due=self.due(batch, state) if self.config.enabled else None)

    # ------------------------------------------------------------------ acting
    def tick(self, now: datetime | None = None) -> TickOutcome:
        """Check the condition once and fire when it holds (under the lock)."""
        if not self.config.enabled:
            return TickOutcome(fired=False, reason="no schedule configured (set CLICKTUNE_SCHEDULE_MODEL_LINE "
                                                   "and CLICKTUNE_SCHEDULE_EMBEDDING_MODEL_ID)")
        if not self.use_lock:
            return self._fire_if_due(now)
        lock = self.redis.lock(f"{self.settings.redis_namespace}:schedule-lock:{self.config.model_line}",
                               timeout=LOCK_TIMEOUT_S, blocking=False)
        if not lock.acquire(blocking=False):
            return TickOutcome(fired=False, reason="another scheduler holds the lock")
        try:
            return self._fire_if_due(now)
        finally:
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - expired meanwhile: nothing to release
                log.warning("schedule lock of %s expired before release", self.config.model_line)

    def _fire_if_due(self, now: datetime | None) -> TickOutcome:
        state = self.state()
        if state is not None and state.pending_window and state.pending_window != state.last_window:
            return self._fire(state.pending_window, f"finishing window {state.pending_window}")
        batch = self.clickstream.open_batch()
        reason = self.due(batch, state, now)
        if reason is None:
            sessions = batch.session_count if batch else 0
            return TickOutcome(fired=False, reason=f"not due ({sessions} sessions in the open batch)")
        assert batch is not None
        return self._fire(f"schedule:{self.config.model_line}:{batch.batch_id}", reason)

    def _fire(self, window: str, reason: str) -> TickOutcome:
        line = self.config.model_line
        states = self.db[STATE_COLLECTION]
        states.update_one({"_id": line}, {"$set": {"pending_window": window}}, upsert=True)
        batch = self.clickstream.release(window)
        if batch is None:  # nothing open and the window never released: drop the window
            states.update_one({"_id": line}, {"$set": {"last_window": window}})
            return TickOutcome(fired=False, reason="no open batch to release", window=window)
        task_id = self.client.enqueue_fine_tuning({
            "embedding_model_id": self.config.embedding_model_id, "batch_id": batch.batch_id,
            "options": {"model_line": line, **self.config.options},
            "deploy_as_blue": self.config.deploy_as_blue, "wait_on_conflict": True, "idempotency_key": window,
        })
        states.update_one({"_id": line}, {"$set": {
            "last_window": window, "last_fired_at": utcnow(), "last_batch_id": batch.batch_id,
            "last_task_id": task_id, "last_reason": reason}})
        log.info("schedule %s fired (%s): batch %s, task %s", line, reason, batch.batch_id, task_id)
        return TickOutcome(fired=True, reason=reason, window=window, batch_id=batch.batch_id, task_id=task_id)

    def run(self, stop: threading.Event | None = None, on_tick: Any = None) -> None:
        """Check every ``tick_s`` until ``stop`` is set; an error is logged and retried next tick."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                outcome = self.tick()
                if on_tick is not None:
                    on_tick(outcome)
            except Exception:  # noqa: BLE001 - a scheduler keeps going through outages
                log.exception("schedule check failed; retrying in %s s", self.config.tick_s)
            stop.wait(self.config.tick_s)

