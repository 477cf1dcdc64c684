"""Bounded retries around MLflow calls, ending in a clear :class:`TrackingUnavailable`.

Two layers, both bounded:

1. MLflow's own HTTP client retries (urllib3) are capped through its environment variables
   ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` /
   ``MLFLOW_HTTP_REQUEST_TIMEOUT``. MLflow's defaults (7 retries, backoff x2, 120 s timeout) can
   keep a call busy for minutes; :func:`configure_mlflow_http` sets small defaults, and an
   operator's explicit environment value always wins.
2. :class:`TrackingRetryPolicy.call` retries a whole manager operation with tenacity (exponential wait,
   a cap on attempts and on total time) when the failure is transient — the server cannot be
   reached, timed out, or answered 5xx/429 — and raises :class:`TrackingUnavailable` afterwards.
   Logical errors (unknown run, bad parameter …) are raised at once, unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, TypeVar

import requests
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential
from tenacity.stop import stop_base

from finetuning.redaction import redact

logger = logging.getLogger(__name__)
T = TypeVar("T")

MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
_TRANSIENT_TYPES = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
    ConnectionError,
    TimeoutError,
)


class TrackingUnavailable(RuntimeError):
    """MLflow could not be reached (or kept failing) after bounded retries. Infrastructure error."""


def configure_mlflow_http() -> None:
    """Give MLflow's HTTP client small retry/timeout defaults unless the environment sets them."""
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def is_transient(exc: BaseException) -> bool:
    """True for connection failures, timeouts and exhausted 5xx/429 retries (also when wrapped).

    MLflow wraps transport errors in ``MlflowException("API request to ... failed with exception
    ...")``, keeping the original as ``__cause__``/``__context__``; we walk that chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSIENT_TYPES):
            return True
        error_code = getattr(current, "error_code", None)
        if error_code == "TEMPORARILY_UNAVAILABLE":
            return True
        current = current.__cause__ or current.__context__
    return False


class TrackingRetryPolicy(BaseModel):
    """How long an operation against MLflow may keep failing before :class:`TrackingUnavailable`.

    ``attempts`` (default 4) tries at most, waiting ``wait_initial`` (0.5 s) doubling up to
    ``wait_max`` (8 s) between them, and never starting a new try after ``max_delay_s`` (60 s).
    """

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(4, ge=1)
    wait_initial: float = Field(0.5, ge=0)
    wait_max: float = Field(8.0, ge=0)
    max_delay_s: float = Field(60.0, gt=0)

    def call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn(*args, **kwargs)``; retry transient failures; raise ``TrackingUnavailable``."""
        return self.call_unless(None, what, fn, *args, **kwargs)

    def call_unless(self, should_stop: Callable[[], bool] | None, what: str, fn: Callable[..., T],
                    *args, **kwargs) -> T:
        """:meth:`call`, giving up early (``TrackingUnavailable``) once ``should_stop()`` is true — the
        waits between tries end as soon as it is, so a cancel is not held up by an MLflow outage."""
        stop = stop_after_attempt(self.attempts) | stop_after_delay(self.max_delay_s)
        if should_stop is not None:
            stop = stop | _StopWhen(should_stop)
        retrying = Retrying(
            stop=stop,
            wait=wait_exponential(multiplier=self.wait_initial, max=self.wait_max),
            retry=retry_if_exception(is_transient),
            sleep=_interruptible_sleep(should_stop),
            before_sleep=lambda state: logger.warning(
                "MLflow %s failed (attempt %d): %s", what, state.attempt_number, _short(state.outcome.exception())
            ),
        )
        try:
            return retrying(fn, *args, **kwargs)
        except RetryError as error:
            last = error.last_attempt.exception()
            attempts = error.last_attempt.attempt_number
            stopped = " (stopped early on request)" if should_stop is not None and should_stop() else ""
            raise TrackingUnavailable(
                f"MLflow tracking server unavailable: {what} failed {attempts} times{stopped}; last error: {_short(last)}"
            ) from last


class _StopWhen(stop_base):
    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: object) -> bool:
        return bool(self.predicate())


def _interruptible_sleep(should_stop: Callable[[], bool] | None) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if should_stop is not None and should_stop():
                return
            time.sleep(min(left, 0.1))
    return sleep


def _short(exc: BaseException | None, limit: int = 300) -> str:
    text = redact(f"{type(exc).__name__}: {exc}") if exc is not None else "unknown error"
    return text if len(text) <= limit else text[: limit - 3] + "..."
