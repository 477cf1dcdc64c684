"""Dramatiq actors: one per task kind of :data:`worker.jobs.JOBS`, each a thin call to :func:`worker.lifecycle.run_task`.

The actor name is the task kind and its only argument the task id; everything else lives in the
task document. ``clicktune worker`` runs ``dramatiq worker.actors``; importing this module declares
every actor on the service broker.
"""

from __future__ import annotations

import dramatiq

from worker.logs import configure_logging
from worker.settings import get_settings

configure_logging(get_settings())  # first: worker lines name their task, carry no secret, no chatter

from worker.broker import broker  # noqa: E402
from worker.jobs import JOBS  # noqa: E402
from worker.lifecycle import Job, run_task  # noqa: E402

settings = get_settings()


def _task_actor(kind: str, job: Job) -> dramatiq.Actor:
    def perform(task_id: str) -> None:
        run_task(kind, task_id, job)

    perform.__name__ = perform.__qualname__ = kind
    perform.__doc__ = f"Run the {kind} task ``task_id`` (see worker.jobs.{kind}_job)."
    return dramatiq.actor(
        perform,
        actor_name=kind,
        broker=broker,
        queue_name=settings.queue_name(kind),
        time_limit=int(settings.time_limit_s(kind) * 1000),
        max_retries=settings.max_retries,
        min_backoff=settings.min_backoff_ms,
        max_backoff=settings.max_backoff_ms,
        notify_shutdown=True,
    )


ACTORS: dict[str, dramatiq.Actor] = {kind: _task_actor(kind, job) for kind, job in JOBS.items()}
