"""Task documents in Mongo: idempotent create, atomic claim with a lease, compare-and-set changes.

:class:`TasksDAO` is generic over the task kind (one collection per kind). A task's status is
written in two methods only: :meth:`TasksDAO.claim_raw` (the entry into ``processing``) and
:meth:`TasksDAO.transition` (every other change). Both are one conditional write whose filter holds
the expected status (and, while running, the lease owner): a lost race returns ``False``/``None``,
it never overwrites.

Leases compare ``lease_expires_ms`` (epoch ms, an integer: the nx-27017 test server stores a
datetime written by ``$set`` as a string); ``lease_expires_at`` is the same instant for people.
Leases compare the clocks of the processes that write them; keep worker clocks in sync (NTP).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from pydantic import ValidationError
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from dao.task_documents import (
    TERMINAL_STATUSES,
    TaskDocument,
    TaskRequest,
    TaskStatus,
    bounded_detail,
    get_task_kind,
    task_document_model,
    utcnow,
)
from dao.task_outcome import after_failed_attempt

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The caller no longer holds the task's lease (it expired and was taken back, or the task ended)."""


class TaskStateError(Exception):
    """The requested change is not allowed in the task's current status (e.g. restart of a running task)."""


@dataclass(frozen=True)
class CreateResult:
    """Outcome of :meth:`TasksDAO.create`: the stored task and whether this call inserted it."""

    task: TaskDocument
    created: bool


@dataclass(frozen=True)
class ReapedTask:
    """A task whose lease had expired and that :meth:`TasksDAO.reap_expired` moved to ``status``."""

    task_id: str
    status: TaskStatus


_KEEP: Any = object()  # "leave the stored value as it is"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class TasksDAO:
    """Data access for one task kind.

    Parameters:
      db: the Mongo database.
      collection_name: this kind's collection (e.g. ``fine_tuning_tasks``).
      request_model: the kind's request model (validated at :meth:`create`).
      document_model: the model documents are read into (default: lifecycle fields + request fields).
      kind: the kind's name stored in each document (default: the collection name without ``_tasks``).
    """

    def __init__(self, db: Database, collection_name: str, request_model: type[TaskRequest],
                 document_model: type[TaskDocument] | None = None, kind: str | None = None) -> None:
        self.db = db
        self.collection: Collection = db[collection_name]
        self.request_model = request_model
        self.document_model = document_model or task_document_model(request_model)
        self.kind = kind or collection_name.removesuffix("_tasks")
        self._indexed = False

    @classmethod
    def for_kind(cls, db: Database, kind: str) -> "TasksDAO":
        """The DAO of a registered task kind (see ``dao.task_documents.register_task_kind``)."""
        spec = get_task_kind(kind)
        return cls(db, spec.collection, spec.request_model, spec.document_model, kind=spec.name)

    # ---------------------------------------------------------------- indexes / reads
    def ensure_indexes(self) -> None:
        """Unique partial index on ``idempotency_key`` (only documents that have one), status/lease index."""
        if self._indexed:
            return
        self.collection.create_index(
            [("idempotency_key", ASCENDING)], name="idempotency_key_unique", unique=True,
            partialFilterExpression={"idempotency_key": {"$type": "string"}},
        )
        self.collection.create_index([("status", ASCENDING), ("lease_expires_ms", ASCENDING)], name="status_lease")
        self.collection.create_index([("created_at", DESCENDING)], name="created_at")
        self._indexed = True

    def parse(self, raw: dict[str, Any]) -> TaskDocument:
        """A stored document as this kind's model (raises ``pydantic.ValidationError`` if malformed)."""
        return self.document_model.model_validate(raw)

    def read(self, raw: dict[str, Any]) -> TaskDocument:
        """Like :meth:`parse`, but a document whose request part no longer validates is still readable
        through its lifecycle fields (a plain :class:`TaskDocument`), so its status can be shown."""
        try:
            return self.parse(raw)
        except ValidationError:
            return TaskDocument.model_validate(raw)

    def get_raw(self, task_id: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": task_id})

    def get(self, task_id: str) -> TaskDocument | None:
        raw = self.get_raw(task_id)
        return self.read(raw) if raw is not None else None

    def find_by_idempotency_key(self, key: str) -> TaskDocument | None:
        raw = self.collection.find_one({"idempotency_key": key})
        return self.read(raw) if raw is not None else None

    def list(self, status: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
             limit: int = 50) -> list[TaskDocument]:
        """Newest first, optionally only the given status(es)."""
        query: dict[str, Any] = {}
        if status is not None:
            statuses = [status] if isinstance(status, (str, TaskStatus)) else list(status)
            query["status"] = {"$in": [TaskStatus(s).value for s in statuses]}
        cursor = self.collection.find(query).sort("created_at", DESCENDING).limit(limit)
        return [self.read(raw) for raw in cursor]

    # ---------------------------------------------------------------- create
    def create(self, request: TaskRequest, *, max_attempts: int = 1, task_id: str | None = None) -> CreateResult:
        """Insert a ``pending`` task for ``request``; with an ``idempotency_key`` at most one ever exists.

        Insert first and, on ``DuplicateKeyError``, return the existing document (never
        check-then-insert: concurrent callers with the same key all get the one task).
        """
        if not isinstance(request, self.request_model):
            request = self.request_model.model_validate(request)
        self.ensure_indexes()
        now = utcnow()
        doc: dict[str, Any] = {
            **request.model_dump(mode="json", exclude={"idempotency_key", "parent_id"}),
            "_id": task_id or uuid.uuid4().hex,
            "kind": self.kind,
            "status": TaskStatus.pending.value,
            "created_at": now,
            "updated_at": now,
            "attempt": 0,
            "max_attempts": max(1, max_attempts),
            "cancel_requested": False,
            "progress": {},
            "result": {},
            "parent_id": request.parent_id,
        }
        if request.idempotency_key is not None:  # absent (not null) so the partial index skips it
            doc["idempotency_key"] = request.idempotency_key
        try:
            self.collection.insert_one(doc)
        except DuplicateKeyError:
            existing = self.find_by_idempotency_key(request.idempotency_key) if request.idempotency_key else None
            if existing is None:
                raise
            return CreateResult(existing, created=False)
        return CreateResult(self.parse(doc), created=True)

    def set_broker_message_id(self, task_id: str, message_id: str, *, only_if_status: TaskStatus | None = None,
                              **fields: Any) -> bool:
        """Record the id of the message just enqueued for this task (and ``fields``, e.g. its send times)."""
        query: dict[str, Any] = {"_id": task_id, **({"status": only_if_status.value} if only_if_status else {})}
        result = self.collection.update_one(query, {"$set": {"broker_message_id": message_id, "updated_at": utcnow(),
                                                             **fields}})
        return result.matched_count == 1

    # ---------------------------------------------------------------- running
    def claim(self, task_id: str, owner: str, lease_s: float, *, now: datetime | None = None) -> TaskDocument | None:
        """:meth:`claim_raw`, the document read into this kind's model."""
        raw = self.claim_raw(task_id, owner, lease_s, now=now)
        return self.parse(raw) if raw is not None else None

    def claim_raw(self, task_id: str, owner: str, lease_s: float, *, now: datetime | None = None) -> dict | None:
        """Atomically take a ``pending`` task, or a ``processing`` one whose lease expired: the stored
        dict (``attempt`` incremented, lease held by ``owner``, progress cleared: an earlier attempt's
        stage is not this one's; the caller can refuse a document that no longer validates), or
        ``None`` when the task is held by a live lease, terminal, or missing."""
        now = now or utcnow()
        expires = now + timedelta(seconds=lease_s)
        raw = self.collection.find_one_and_update(
            {"_id": task_id, "$or": [
                {"status": TaskStatus.pending.value},
                {"status": TaskStatus.processing.value, "lease_expires_ms": {"$lt": _ms(now)}},
            ]},
            {"$set": {"status": TaskStatus.processing.value, "lease_owner": owner,
                      "lease_expires_ms": _ms(expires), "lease_expires_at": expires,
                      "started_at": now, "updated_at": now, "progress": {}},
             "$inc": {"attempt": 1}},
            return_document=ReturnDocument.AFTER,
        )
        return raw

    def heartbeat(self, task_id: str, owner: str, lease_s: float, *, now: datetime | None = None) -> bool:
        """Renew the lease if ``owner`` still holds it; return whether cancel was requested.

        Raises :class:`LeaseLost` when the task is no longer ``processing`` under ``owner``.
        """
        now = now or utcnow()
        expires = now + timedelta(seconds=lease_s)
        raw = self.collection.find_one_and_update(
            {"_id": task_id, "status": TaskStatus.processing.value, "lease_owner": owner},
            {"$set": {"lease_expires_ms": _ms(expires), "lease_expires_at": expires, "updated_at": now}},
            projection={"cancel_requested": 1},
            return_document=ReturnDocument.AFTER,
        )
        if raw is None:
            raise LeaseLost(f"task {task_id} is no longer held by {owner}")
        return bool(raw.get("cancel_requested"))

    def set_progress(self, task_id: str, owner: str, progress: dict[str, Any]) -> bool:
        """Replace ``progress`` while ``owner`` holds the task; ``False`` if it does not."""
        result = self.collection.update_one(
            {"_id": task_id, "status": TaskStatus.processing.value, "lease_owner": owner},
            {"$set": {"progress": progress, "updated_at": utcnow()}},
        )
        return result.matched_count == 1

    def transition(self, task_id: str, expected: TaskStatus | Iterable[TaskStatus], new: TaskStatus, *,
                   owner: str | None = None, lease_expired_before_ms: int | None = None,
                   detail: str | None = _KEEP, **fields: Any) -> bool:
        """Compare-and-set: move the task from (one of) ``expected`` to ``new``. The only writer of ``status``.

        With ``owner`` the task must also be held by that lease owner (``None`` together with
        ``lease_expired_before_ms`` means "held by nobody"); with ``lease_expired_before_ms`` its
        lease must have expired before that instant (epoch ms). Entering a terminal status
        stamps ``finished_at`` and drops the lease; entering ``pending`` drops the lease. ``detail``
        is left as stored unless given (``None`` clears it).
        Returns ``False`` when the task was not in the expected state (a lost race, reported, not overwritten).
        """
        expected_list = [expected] if isinstance(expected, TaskStatus) else list(expected)
        now = utcnow()
        query: dict[str, Any] = {"_id": task_id, "status": {"$in": [s.value for s in expected_list]}}
        if owner is not None or lease_expired_before_ms is not None:
            query["lease_owner"] = owner
        if lease_expired_before_ms is not None:
            query["lease_expires_ms"] = {"$lt": lease_expired_before_ms}
        update: dict[str, Any] = {"status": new.value, "updated_at": now, **fields}
        if detail is not _KEEP:
            update["detail"] = bounded_detail(detail)
        if new in TERMINAL_STATUSES or new is TaskStatus.pending:
            update.update(lease_owner=None, lease_expires_ms=None, lease_expires_at=None)
        if new in TERMINAL_STATUSES:
            update["finished_at"] = now
        result = self.collection.update_one(query, {"$set": update})
        if result.matched_count != 1:
            log.info("task %s: %s -> %s lost its compare-and-set (owner=%s)", task_id,
                     [s.value for s in expected_list], new.value, owner)
            return False
        return True

    def finish(self, task_id: str, owner: str, status: TaskStatus, *, detail: str | None = None,
               result: dict[str, Any] | None = None) -> bool:
        """``processing`` (held by ``owner``) → terminal ``status``, with ``detail`` and ``result``."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status} is not terminal")
        fields: dict[str, Any] = {} if result is None else {"result": result}
        return self.transition(task_id, TaskStatus.processing, status, owner=owner, detail=detail, **fields)

    def release(self, task_id: str, owner: str, detail: str) -> bool:
        """``processing`` (held by ``owner``) → ``pending`` for a retry, saying why."""
        return self.transition(task_id, TaskStatus.processing, TaskStatus.pending, owner=owner, detail=detail)

    # ---------------------------------------------------------------- user actions
    def request_cancel(self, task_id: str) -> TaskDocument | None:
        """Cancel: ``pending`` → ``canceled`` at once; ``processing`` → ``cancel_requested`` (the
        running job stops at its next check, within one heartbeat). Terminal tasks are left as they are.
        Returns the document after the change (``None`` if there is no such task)."""
        if self.transition(task_id, TaskStatus.pending, TaskStatus.canceled, detail="canceled before it started"):
            return self.get(task_id)
        self.collection.update_one(
            {"_id": task_id, "status": TaskStatus.processing.value},
            {"$set": {"cancel_requested": True, "updated_at": utcnow()}},
        )
        task = self.get(task_id)
        if task is not None and task.status is TaskStatus.pending:  # released for a retry meanwhile
            return self.request_cancel(task_id)
        return task

    def restart(self, task_id: str, *, max_attempts: int | None = None) -> CreateResult:
        """A new ``pending`` task with the same request and ``parent_id`` = the terminal ``task_id``.

        The old document stays as the record of what happened. Idempotent: restarting the same
        task again returns the same new task (its ``idempotency_key`` is ``restart:<task_id>``);
        to try once more, restart the new one.
        """
        old = self.get(task_id)
        if old is None:
            raise KeyError(task_id)
        if not old.terminal:
            raise TaskStateError(f"task {task_id} is {old.status.value}; only a finished task can be restarted")
        request_fields = set(self.request_model.model_fields) - {"idempotency_key", "parent_id"}
        values = old.model_dump(include=request_fields, mode="json")
        request = self.request_model.model_validate(
            {**values, "idempotency_key": f"restart:{task_id}", "parent_id": task_id})
        return self.create(request, max_attempts=max_attempts or old.max_attempts)

    # ---------------------------------------------------------------- recovery
    def reap_expired(self, now: datetime | None = None, *, limit: int = 100,
                     pending_fields: dict[str, Any] | None = None) -> list[ReapedTask]:
        """Take back every ``processing`` task whose lease expired before ``now``.

        What it becomes is :func:`dao.task_outcome.after_failed_attempt`'s decision: ``pending``
        (the caller re-sends its message) while attempts remain, ``canceled`` if cancel was
        requested, else ``failed``. Each move is a compare-and-set on the owner and the expired
        lease, so concurrent reapers (and claimers) never double-move. A task made ``pending`` also gets
        ``pending_fields`` (``dao.task_recovery.resend_fields``). """
        cutoff = _ms(now or utcnow())
        reaped: list[ReapedTask] = []
        candidates = self.collection.find(
            {"status": TaskStatus.processing.value, "lease_expires_ms": {"$lt": cutoff}},
            {"attempt": 1, "max_attempts": 1, "lease_owner": 1, "cancel_requested": 1},
        ).limit(limit)
        for raw in list(candidates):
            attempt, max_attempts = int(raw.get("attempt", 0)), int(raw.get("max_attempts", 1))
            lost = f"the worker holding attempt {attempt} stopped renewing its lease ({raw.get('lease_owner')})"
            decision = after_failed_attempt(attempt, max_attempts, lost,
                                            cancel_requested=bool(raw.get("cancel_requested")))
            if self.transition(raw["_id"], TaskStatus.processing, decision.status, owner=raw.get("lease_owner"),
                               lease_expired_before_ms=cutoff, detail=decision.detail,
                               **((pending_fields or {}) if decision.status is TaskStatus.pending else {})):
                reaped.append(ReapedTask(raw["_id"], decision.status))
        return reaped

    def drop(self) -> None:
        """Remove the collection (tests)."""
        self.collection.drop()
        self._indexed = False
