"""Python client: enqueue tasks, read their status, cancel and restart them.

Enqueue = validate the request (a bad request is an :class:`InvalidRequest` here, before anything
is stored; a fine-tuning task's ``options.loader`` is validated too) → insert the document
(idempotent on ``idempotency_key``) → send the Dramatiq message → store that message's id in
``broker_message_id``. If the send fails (Redis down), the document this call inserted is deleted
again and the error propagates: no ``pending`` task is left that nothing will ever send, and the
same call can simply be repeated. A document that an earlier call left unsent (its process died
between insert and send) is re-sent by an enqueue with the same idempotency key once
``resend_grace_s`` has passed since it was created (so that concurrent callers with one key do not
all send). :class:`InvalidRequest` names the fields and the reasons, never the values given (a
value in a forbidden field may be a password).

    client = ClicktuneClient()                       # settings from CLICKTUNE_* env
    task_id = client.enqueue_fine_tuning({"embedding_model_id": "base:all-MiniLM-L6-v2",
                                          "batch_id": "2024-06-01", "idempotency_key": "nightly-06-01"})
    client.wait(task_id).status                      # TaskStatus.done
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Iterable

import dramatiq
from pydantic import BaseModel, ValidationError
from pymongo.database import Database

from dao.mongo import mongo_database
from dao.task_documents import (
    TASK_KINDS,
    FineTuningRequest,
    ReindexRequest,
    TaskDocument,
    TaskRequest,
    TaskStatus,
    get_task_kind,
    utcnow,
)
from dao.task_recovery import resend_fields
from dao.tasks import CreateResult, TasksDAO
from worker.lifecycle.errors import describe_validation_error
from worker.lifecycle.middleware import resend_grace_s
from worker.settings import Settings, get_settings


class InvalidRequest(ValueError):
    """The request cannot be enqueued (wrong model id format, missing batch, malformed options …)."""


class TaskNotFound(KeyError):
    """No task with this id (in the given kind, or in any kind)."""


def _check_loader(kind: str, request: TaskRequest) -> None:
    """A fine-tuning task's loader config must parse now: a bad one is refused before it is stored."""
    options = getattr(request, "options", None)
    loader = getattr(options, "loader", None)
    if not loader:
        return
    from loaders.config import parse_loader_config

    try:
        parse_loader_config(dict(loader))
    except ValidationError as exc:
        raise InvalidRequest(f"invalid {kind} request: {describe_validation_error(exc, 'options.loader')}") from None


class ClicktuneClient:
    """Client of one clicktune deployment.

    Parameters:
      settings: default :func:`~worker.settings.get_settings` (``CLICKTUNE_*`` env).
      db: Mongo database (default: from ``settings``).
      broker: Dramatiq broker to send with (default: a Redis broker for ``settings``; with
        ``settings.broker == "stub"`` the process's global broker, shared with an in-process worker).
    """

    def __init__(self, settings: Settings | None = None, *, db: Database | None = None,
                 broker: dramatiq.Broker | None = None) -> None:
        self.settings = settings or get_settings()
        self.db = db if db is not None else mongo_database(self.settings.mongo_url, self.settings.mongo_db)
        self._broker = broker
        self._daos: dict[str, TasksDAO] = {}

    @property
    def broker(self) -> dramatiq.Broker:
        if self._broker is None:
            if self.settings.broker == "stub":
                import worker.broker  # noqa: F401  (configures the global broker)

                self._broker = dramatiq.get_broker()
            else:
                from worker.broker import build_broker

                self._broker = build_broker(self.settings)
        return self._broker

    def dao(self, kind: str) -> TasksDAO:
        if kind not in self._daos:
            self._daos[kind] = TasksDAO.for_kind(self.db, kind)
        return self._daos[kind]

    # ------------------------------------------------------------------ enqueue
    def enqueue(self, kind: str, request: TaskRequest | dict[str, Any], *,
                message_options: dict[str, Any] | None = None) -> str:
        """Store (idempotently) and send a task of ``kind``; returns the task id."""
        spec = get_task_kind(kind)
        try:
            if isinstance(request, BaseModel) and not isinstance(request, spec.request_model):
                request = request.model_dump()
            if not isinstance(request, spec.request_model):
                request = spec.request_model.model_validate(request)
        except ValidationError as exc:
            raise InvalidRequest(f"invalid {kind} request: {describe_validation_error(exc)}") from None
        _check_loader(kind, request)
        dao = self.dao(kind)
        created = dao.create(request, max_attempts=self.settings.max_retries + 1)
        self._send_or_roll_back(kind, created, message_options)
        return created.task.id

    def _send_or_roll_back(self, kind: str, created: CreateResult,
                           message_options: dict[str, Any] | None = None) -> None:
        """Send the message of a task just created (or left unsent); if sending fails, delete the
        document this call created (still ``pending`` without a message id) and re-raise."""
        task = created.task
        if not (created.created or self._needs_resend(task)):
            return
        dao = self.dao(kind)
        try:
            message_id = self.send(kind, task.id, options=message_options)
        except Exception:
            if created.created:
                dao.collection.delete_one({"_id": task.id, "status": TaskStatus.pending.value,
                                           "broker_message_id": None})
            raise
        # the send times again: the broker's after_enqueue stamp is skipped if Mongo blinked at that instant
        dao.set_broker_message_id(task.id, message_id, **resend_fields(resend_grace_s(self.settings)))

    def _needs_resend(self, task: TaskDocument) -> bool:
        """A pending task with no message id whose creator had time to send: its send failed."""
        return (task.status is TaskStatus.pending and task.broker_message_id is None
                and utcnow() - task.created_at >= timedelta(seconds=self.settings.resend_grace_s))

    def send(self, kind: str, task_id: str, *, options: dict[str, Any] | None = None) -> str:
        """Send the message that runs ``task_id``; returns the id of the message actually enqueued."""
        queue = self.settings.queue_name(kind)
        self.broker.declare_queue(queue)
        message = dramatiq.Message(queue_name=queue, actor_name=kind, args=(task_id,), kwargs={},
                                   options=dict(options or {}))
        return self.broker.enqueue(message).message_id

    def enqueue_fine_tuning(self, request: FineTuningRequest | dict[str, Any]) -> str:
        return self.enqueue("fine_tuning", request)

    def enqueue_reindex(self, request: ReindexRequest | dict[str, Any]) -> str:
        return self.enqueue("reindex", request)

    def enqueue_probe(self, seconds: float = 0.0, *, idempotency_key: str | None = None,
                      time_limit_s: float | None = None, **fields: Any) -> str:
        """A diagnostic probe task; ``time_limit_s`` overrides the actor's time limit for this message."""
        options = {"time_limit": int(time_limit_s * 1000)} if time_limit_s else None
        request = {"seconds": seconds, "idempotency_key": idempotency_key, **fields}
        return self.enqueue("probe", request, message_options=options)

    # ------------------------------------------------------------------ read
    def find(self, task_id: str, kind: str | None = None) -> tuple[str, TaskDocument]:
        """(kind, document) of ``task_id``; searches every kind when ``kind`` is not given."""
        for name in ([kind] if kind else list(TASK_KINDS)):
            task = self.dao(name).get(task_id)
            if task is not None:
                return name, task
        raise TaskNotFound(task_id)

    def status(self, task_id: str, kind: str | None = None) -> TaskDocument:
        return self.find(task_id, kind)[1]

    def list_tasks(self, kind: str | None = None, status: str | TaskStatus | Iterable | None = None,
                   limit: int = 50) -> list[TaskDocument]:
        """Newest first across the given kind (or all kinds)."""
        tasks: list[TaskDocument] = []
        for name in ([kind] if kind else list(TASK_KINDS)):
            tasks.extend(self.dao(name).list(status=status, limit=limit))
        tasks.sort(key=lambda t: t.created_at, reverse=True)
        return tasks[:limit]

    def wait(self, task_id: str, *, timeout: float = 60.0, kind: str | None = None,
             poll_s: float = 0.1) -> TaskDocument:
        """Poll until the task is terminal; raises ``TimeoutError`` with its last state otherwise."""
        kind = kind or self.find(task_id)[0]
        deadline = time.monotonic() + timeout
        while True:
            task = self.status(task_id, kind)
            if task.terminal:
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {task.status.value} after {timeout}s "
                                   f"(progress={task.progress.model_dump(exclude_none=True)}, detail={task.detail})")
            time.sleep(poll_s)

    # ------------------------------------------------------------------ act
    def cancel(self, task_id: str, kind: str | None = None) -> TaskDocument:
        """Pending → ``canceled`` now; running → the job stops within one heartbeat."""
        kind = kind or self.find(task_id)[0]
        task = self.dao(kind).request_cancel(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def restart(self, task_id: str, kind: str | None = None) -> str:
        """Enqueue a new attempt of a finished task (``parent_id`` = ``task_id``); returns the new id.
        Raises ``dao.tasks.TaskStateError`` if the task has not finished."""
        kind = kind or self.find(task_id)[0]
        created = self.dao(kind).restart(task_id, max_attempts=self.settings.max_retries + 1)
        self._send_or_roll_back(kind, created)
        return created.task.id
