"""Task lifecycle while a task runs: claim, lease, heartbeat, cancel, outcome (see ``runner``)."""

from worker.lifecycle.context import TaskContext
from worker.lifecycle.errors import TaskCanceled, TaskDeferred, TaskFailed, TaskRefused, redact, safe_detail
from worker.lifecycle.runner import Job, lease_owner_id, run_task

__all__ = ["Job", "TaskCanceled", "TaskContext", "TaskDeferred", "TaskFailed", "TaskRefused", "lease_owner_id", "redact", "run_task", "safe_detail"]
