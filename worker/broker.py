"""The Dramatiq broker of the service, configured from :class:`~worker.settings.Settings`.

Importing this module sets the global Dramatiq broker from the environment (``CLICKTUNE_*``), so
``dramatiq worker.actors`` (what ``clicktune worker`` runs) picks it up. Clients that need other
settings call :func:`build_broker` themselves.

Middleware, in order (explicit, not Dramatiq's implicit defaults):

* ``AgeLimit(max_age=max_message_age_ms)`` — drop messages nobody ran for too long;
* ``TimeLimit(time_limit=task_time_limit_s)`` — interrupt a job running too long (actors set their own);
* ``ShutdownNotifications`` — on worker shutdown, interrupt jobs of actors with ``notify_shutdown``;
* ``Callbacks``, ``Pipelines`` — Dramatiq's composition helpers;
* ``TaskOutcome`` — when Dramatiq gives up on a message, its task becomes ``failed`` (ours; listed
  before ``Retries`` because Dramatiq runs ``after_*`` hooks in reverse order);
* ``Retries(max_retries, min_backoff, max_backoff)`` — bounded exponential backoff for infrastructure errors;
* ``CurrentMessage`` — lets ``run_task`` read the message's options (e.g. a per-message time limit);
* ``LeaseReaper`` — takes back tasks whose worker died (ours);
* ``WorkerHeartbeat`` (+ Dramatiq's ``Prometheus`` when ``worker_metrics_port`` is set) — see
  :mod:`worker.monitoring`.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from worker.lifecycle.middleware import LeaseReaper, TaskOutcome
from worker.monitoring import monitoring_middleware
from worker.settings import Settings, get_settings


def build_middleware(settings: Settings) -> list[dramatiq.Middleware]:
    return [
        AgeLimit(max_age=settings.max_message_age_ms),
        TimeLimit(time_limit=int(settings.task_time_limit_s * 1000), interval=250),
        ShutdownNotifications(notify_shutdown=False),
        Callbacks(),
        Pipelines(),
        # ``after_*`` hooks run in reverse order: TaskOutcome, listed before Retries, sees the
        # message after Retries has decided whether to give up on it.
        TaskOutcome(settings),
        Retries(max_retries=settings.max_retries, min_backoff=settings.min_backoff_ms,
                max_backoff=settings.max_backoff_ms),
        CurrentMessage(),
        LeaseReaper(settings),
        # consumption heartbeat in Redis, and Dramatiq's Prometheus metrics when configured
        *monitoring_middleware(settings),
    ]


def build_broker(settings: Settings) -> dramatiq.Broker:
    """A new broker for ``settings`` (``RedisBroker`` in namespace ``redis_namespace``, or a ``StubBroker``)."""
    middleware = build_middleware(settings)
    if settings.broker == "stub":
        return StubBroker(middleware=middleware)
    return RedisBroker(url=settings.redis_url.get_secret_value(), namespace=settings.redis_namespace,
                       middleware=middleware)


def configure_broker(settings: Settings | None = None) -> dramatiq.Broker:
    """Build the broker for ``settings`` (default: the environment) and make it Dramatiq's global broker."""
    broker = build_broker(settings or get_settings())
    dramatiq.set_broker(broker)
    return broker


broker = configure_broker()
