"""``RetryingClient``: an ``MlflowClient`` whose every call goes through a :class:`TrackingRetryPolicy`.

``client.get_run(run_id)`` on the proxy is ``policy.call("get_run", mlflow_client.get_run, run_id)``:
transient failures (server unreachable, 5xx) are retried within the policy's bounds (or until
``should_stop()``) and end in ``TrackingUnavailable``; logical errors (unknown run …) are raised at once. Functions that are not
client methods but talk to the server (logging or downloading a model) go through :meth:`retry`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from mlflow import MlflowClient

from finetuning.experiments.retry import TrackingRetryPolicy, configure_mlflow_http

T = TypeVar("T")


class RetryingClient:
    """Proxy of ``client`` (see the module docstring); ``raw`` is the client itself."""

    def __init__(self, client: MlflowClient, policy: TrackingRetryPolicy,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.raw = client
        self.policy = policy
        self.should_stop = should_stop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.raw, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.policy.call_unless(self.should_stop, name, attribute, *args, **kwargs)

        return call

    def retry(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run another server operation (``fn(*args, **kwargs)``) under the same policy."""
        return self.policy.call_unless(self.should_stop, what, fn, *args, **kwargs)

    def __repr__(self) -> str:  # never show the tracking URI (it may carry credentials)
        return f"RetryingClient(policy={self.policy!r})"


def tracking_client(tracking_uri: str, policy: TrackingRetryPolicy | None = None,
                    should_stop: Callable[[], bool] | None = None) -> RetryingClient:
    """A retrying client of the tracking server and registry at ``tracking_uri`` (small HTTP retry
    defaults set first, see :func:`~finetuning.experiments.retry.configure_mlflow_http`);
    ``should_stop()`` cuts retry waits short (a canceled task)."""
    configure_mlflow_http()
    return RetryingClient(MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri),
                          policy or TrackingRetryPolicy(), should_stop)
