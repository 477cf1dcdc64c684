"""The one rule for an attempt that ended without a result: retry, fail, refuse, or cancel.

Used by every place that sees such an ending — the runner (the job raised), the lease reaper (the
worker stopped renewing its lease) and the Dramatiq middleware (Dramatiq gave up on a message) —
so "no attempts left" and "never retry this" are decided here and nowhere else. The caller then
writes the decision with ``TasksDAO.transition`` (compare-and-set).

Permanent errors: an exception whose class declares ``permanent = True`` (for example a loader's
source-configuration error: a table that does not exist, a root that is not a directory) is a
property of the request, not of the moment, so retrying cannot help: the task is ``refused`` at
once with the reason. The declaration may sit on the exception or on one it was raised from.
"""

from __future__ import annotations

from dataclasses import dataclass

from dao.task_documents import TaskStatus


@dataclass(frozen=True)
class Decision:
    """What the task becomes, and the ``detail`` that says why."""

    status: TaskStatus
    detail: str

    @property
    def retry(self) -> bool:
        return self.status is TaskStatus.pending


def is_permanent(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) declares ``permanent = True``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "permanent", False) is True:
            return True
        exc = exc.__cause__
    return False


def after_failed_attempt(attempt: int, max_attempts: int, reason: str, *, permanent: bool = False,
                         cancel_requested: bool = False) -> Decision:
    """The status after attempt ``attempt`` (1-based) of ``max_attempts`` ended for ``reason``.

    Cancel requested → ``canceled``; a permanent error → ``refused``; attempts used up → ``failed``;
    otherwise back to ``pending`` for a retry.
    """
    if cancel_requested:
        return Decision(TaskStatus.canceled, f"canceled; {reason}")
    if permanent:
        return Decision(TaskStatus.refused, f"{reason} (permanent: not retried)")
    if attempt >= max_attempts:
        return Decision(TaskStatus.failed, f"{reason}; no attempts left ({attempt}/{max_attempts})")
    return Decision(TaskStatus.pending, f"{reason}; retrying ({attempt}/{max_attempts} used)")


def after_broker_gave_up(reason: str, exc: BaseException | None = None) -> Decision:
    """The status of a task whose message the broker dropped (retries exhausted, or too old to run)."""
    if is_permanent(exc):
        return Decision(TaskStatus.refused, f"{reason} (permanent: not retried)")
    return Decision(TaskStatus.failed, reason)
