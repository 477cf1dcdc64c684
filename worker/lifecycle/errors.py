"""Outcomes a job signals by raising, and the secret-free ``detail`` text stored for errors."""

from __future__ import annotations

from typing import Iterable

from pydantic import SecretStr, ValidationError

from dao.task_documents import bounded_detail
from finetuning.redaction import redact


class TaskRefused(Exception):
    """Unusable input (empty batch, no clicks, unknown model …): the task ends ``refused`` with
    ``detail`` and is NOT retried. Raise it from a job; the detail is shown to the user."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TaskDeferred(Exception):
    """Not now (a lock is held elsewhere …): the task goes back to ``pending`` with ``detail``, its
    message is re-sent after ``delay_ms``, and the attempt is not counted — waiting is not failing."""

    def __init__(self, detail: str, delay_ms: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.delay_ms = max(0, int(delay_ms))


class TaskFailed(Exception):
    """A permanent failure the job has cleaned up after: the task ends ``failed`` with ``detail`` now,
    without the retries an unexpected exception gets."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TaskCanceled(Exception):
    """Raised by :meth:`TaskContext.raise_if_canceled` after a cancel request: the task ends ``canceled``."""


def redacted_detail(text: str, secrets: Iterable[SecretStr | str | None] = ()) -> str:
    """``text`` redacted and bounded."""
    return bounded_detail(redact(text, secrets)) or ""


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """``"field.path: reason; …"`` without the input values (a value may be a secret put in the wrong field)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        problems.append(f"{location}: {error['msg']}" if location else error["msg"])
    return "; ".join(problems)


def safe_detail(exc: BaseException, secrets: Iterable[SecretStr | str | None] = ()) -> str:
    """``"ErrorType: message"``, redacted and bounded — what goes into a task's ``detail``. A pydantic
    ``ValidationError`` is described by field and reason only: its own text echoes the rejected values."""
    message = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc).strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return bounded_detail(redact(text, secrets)) or ""
