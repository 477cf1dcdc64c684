"""MLflow unreachable → bounded retries, then a clear ``TrackingUnavailable`` (never a hang)."""

from __future__ import annotations

import time

import pytest
import requests
from mlflow.exceptions import MlflowException

from finetuning.experiments import ExperimentsManager, TrackingRetryPolicy, TrackingUnavailable, run_iteration
from finetuning.experiments.retry import is_transient
from finetuning.redaction import redact
from finetuning.params import FineTuningSettings
from worker.local_services import free_port


def test_unreachable_server_fails_fast_with_a_clear_error():
    port = free_port()  # nothing listens here
    manager = ExperimentsManager(f"http://user:s3cret@127.0.0.1:{port}", "line")
    calls = []
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable) as info:
        run_iteration(manager, lambda p, t: calls.append(p) or 1.0, start_ref="base:x", batch_id="b",
                      settings=FineTuningSettings(), max_evals=2)
    elapsed = time.monotonic() - started
    assert elapsed < 90, f"took {elapsed:.0f}s"
    message = str(info.value)
    assert "MLflow tracking server unavailable" in message and "failed 4 times" in message
    assert "s3cret" not in message and "s3cret" not in repr(manager)
    assert calls == []  # nothing trained without tracking


def test_policy_bounds_attempts_and_time():
    attempts = []

    def refuse():
        attempts.append(time.monotonic())
        raise requests.exceptions.ConnectionError("refused")

    with pytest.raises(TrackingUnavailable, match="failed 3 times"):
        TrackingRetryPolicy(attempts=3, wait_initial=0.01, wait_max=0.02).call("op", refuse)
    assert len(attempts) == 3
    attempts.clear()
    with pytest.raises(TrackingUnavailable):
        TrackingRetryPolicy(attempts=100, wait_initial=0.05, wait_max=0.05, max_delay_s=0.3).call("op", refuse)
    assert 2 <= len(attempts) < 20


def test_logical_errors_are_not_retried():
    attempts = []

    def missing():
        attempts.append(1)
        raise MlflowException("Run 'x' not found", error_code="RESOURCE_DOES_NOT_EXIST")

    with pytest.raises(MlflowException, match="not found"):
        TrackingRetryPolicy(attempts=5, wait_initial=0.01).call("get_run", missing)
    assert attempts == [1]


def test_transient_detection_follows_the_wrapped_cause():
    try:
        try:
            raise requests.exceptions.ConnectionError("refused")
        except Exception as error:
            raise MlflowException(f"API request to http://h/api failed with exception {error}")
    except MlflowException as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(MlflowException("bad param", error_code="INVALID_PARAMETER_VALUE"))
    assert redact("http://u:p@host:5000/x and https://tok@h") == "http://***@host:5000/x and https://***@h"


def test_a_stop_request_cuts_the_retry_waits_short():
    port = free_port()  # nothing listens here
    stop_at = time.monotonic() + 1.0
    manager = ExperimentsManager(f"http://127.0.0.1:{port}", "line",
                                 retries=TrackingRetryPolicy(attempts=50, wait_initial=5, wait_max=5, max_delay_s=120),
                                 should_stop=lambda: time.monotonic() > stop_at)
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="stopped early on request"):
        manager.start_iteration("base:x", "b")
    assert time.monotonic() - started < 20  # without the stop: minutes of 5 s waits
