"""What a running job sees: its task document, settings, database, and the ways to report back."""

from __future__ import annotations

import threading
from typing import Any

from pymongo.database import Database

from dao.task_documents import TaskDocument
from dao.tasks import LeaseLost, TasksDAO
from worker.lifecycle.errors import TaskCanceled
from worker.settings import Settings


class TaskContext:
    """Handed to ``job(ctx)`` by :func:`worker.lifecycle.run_task`.

    Attributes:
      kind: the task kind (``fine_tuning``, ``reindex``, ``probe`` …).
      task: the claimed document (request fields, ``attempt``, ``parent_id`` …), as of the claim.
      settings: the worker's :class:`~worker.settings.Settings`.
      db: the Mongo database of the service.
      owner: this run's lease owner id.
    """

    def __init__(self, kind: str, task: TaskDocument, settings: Settings, db: Database, dao: TasksDAO,
                 owner: str) -> None:
        self.kind, self.task, self.settings, self.db, self.dao, self.owner = kind, task, settings, db, dao, owner
        self._cancel = threading.Event()
        self._lost = threading.Event()
        self._progress: dict[str, Any] = task.progress.model_dump(exclude_none=True)

    # -- reporting ----------------------------------------------------------------------------
    def progress(self, stage: str, fraction: float | None = None, **fields: Any) -> None:
        """Record where the job is: ``stage`` and ``fraction`` (0..1, ``None`` = unknown) replace the
        previous ones; other fields (``epoch``, ``step``, ``trial``, ``trials_total``, ``best_metric``, or
        your own) are merged into the previous progress. One Mongo write per call: call it per epoch /
        trial / a few seconds, not per sample."""
        if fraction is not None:
            fraction = min(1.0, max(0.0, float(fraction)))
        self._progress.update(fields)
        self._progress["stage"] = stage
        self._progress["fraction"] = fraction
        if not self.dao.set_progress(self.task.id, self.owner, dict(self._progress)):
            self._lost.set()

    def stage(self, stage: str, fraction: float | None = None, **fields: Any) -> None:
        """Begin a stage of the job: stop here if a cancel was requested or the lease was lost
        (:meth:`raise_if_canceled`), else report it (:meth:`progress`)."""
        self.raise_if_canceled()
        self.progress(stage, fraction, **fields)

    # -- stopping -----------------------------------------------------------------------------
    @property
    def cancel_requested(self) -> bool:
        """A user asked to cancel (seen at the last heartbeat)."""
        return self._cancel.is_set()

    @property
    def lease_lost(self) -> bool:
        """This run no longer holds the task (another worker may run it now): stop, write nothing."""
        return self._lost.is_set()

    def should_stop(self) -> bool:
        """For loops and Lightning callbacks (``trainer.should_stop = ctx.should_stop()``)."""
        return self.cancel_requested or self.lease_lost

    def raise_if_canceled(self) -> None:
        """Raise :class:`TaskCanceled` after a cancel request, :class:`~dao.tasks.LeaseLost` if the lease is gone.
        Call it between units of work (steps, batches, trials)."""
        if self.lease_lost:
            raise LeaseLost(f"task {self.task.id} is no longer held by {self.owner}")
        if self.cancel_requested:
            raise TaskCanceled("canceled on request")

    # -- used by the lease keeper -------------------------------------------------------------
    def _mark_cancel_requested(self) -> None:
        self._cancel.set()

    def _mark_lease_lost(self) -> None:
        self._lost.set()
