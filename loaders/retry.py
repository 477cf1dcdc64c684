"""Retries with exponential backoff for transient errors only (tenacity).

The policy is owned here, in one place: the client libraries' own retries are switched off (botocore
``total_max_attempts=1``, google-cloud-storage ``retry=None``) so that attempts, backoff and what counts
as transient are the same for every source and visible in the loader's stats.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from loaders.errors import ErrorKind, Redactor

T = TypeVar("T")
logger = logging.getLogger("clicktune.loaders")


class RetryPolicy(BaseModel):
    """How often and how patiently a transient error is retried.

    - ``max_attempts`` (default 5): total attempts including the first.
    - ``backoff_initial_s`` (0.2) and ``backoff_max_s`` (5.0): exponential wait between attempts
      (doubling, capped), plus up to ``backoff_jitter_s`` (0.1) random jitter so that a pool of threads
      does not retry in lockstep.
    """

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(5, ge=1, le=50)
    backoff_initial_s: float = Field(0.2, ge=0)
    backoff_max_s: float = Field(5.0, ge=0)
    backoff_jitter_s: float = Field(0.1, ge=0)


def call_with_retries(
    fn: Callable[[], T],
    classify: Callable[[BaseException], ErrorKind | None],
    policy: RetryPolicy,
    redact: Redactor,
    what: str,
    on_retry: Callable[[BaseException], None] | None = None,
    abort: threading.Event | None = None,
) -> T:
    """Call ``fn`` until it succeeds, raises a non-retryable error, or attempts run out (then re-raise).

    ``classify`` sorts an exception into an :class:`ErrorKind`; ``None`` means "unexpected" (a bug, not a
    source problem): it is never retried and propagates unchanged.

    ``what`` names the operation in the debug log line written before each wait (redacted).
    ``on_retry`` is called with the exception before each wait (e.g. to count retries or reconnect).
    ``abort``: once set (another item found the source unusable), no further attempt is made.
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return
        if on_retry is not None:
            on_retry(exc)
        logger.debug(
            "%s: attempt %d failed (%s), retrying in %.2fs",
            what, state.attempt_number, redact.describe(exc),
            state.next_action.sleep if state.next_action else 0.0,
        )

    stop = stop_after_attempt(policy.max_attempts)
    if abort is not None:
        stop = stop | stop_when_event_set(abort)
    retrying = Retrying(
        stop=stop,
        wait=wait_exponential_jitter(
            initial=policy.backoff_initial_s, max=policy.backoff_max_s, jitter=policy.backoff_jitter_s
        ),
        retry=retry_if_exception(lambda exc: _retryable(classify(exc))),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)


def _retryable(kind: ErrorKind | None) -> bool:
    return kind is not None and kind.retryable
