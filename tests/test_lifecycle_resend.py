"""The lease reaper's re-send sweep, on a real Redis broker and the real Mongo wire server: a
``pending`` task whose message was lost is re-sent once its message is ``grace`` overdue (and runs
to ``done``); a deferred task is never re-sent before its due time."""

from __future__ import annotations

import time

import dramatiq
import pytest
import redis

from dao.task_documents import ProbeRequest, TaskStatus
from dao.tasks import TasksDAO
from worker.broker import build_broker
from worker.lifecycle import TaskContext, TaskDeferred, run_task
from worker.lifecycle.middleware import LeaseReaper, resend_grace_s


@pytest.fixture
def resend_setup(worker_settings, mongo_db):
    """A RedisBroker in this test's namespace with a ``probe`` actor running ``jobs[0]``; grace 1 s."""
    settings = worker_settings.model_copy(update={"resend_grace_s": 0.0, "lease_seconds": 0.5,
                                                  "heartbeat_seconds": 0.1})
    assert resend_grace_s(settings) == 1.0  # at least two leases
    broker = build_broker(settings)
    jobs: list = []

    @dramatiq.actor(actor_name="probe", queue_name="probe", broker=broker, max_retries=0)
    def probe(task_id: str) -> None:
        run_task("probe", task_id, jobs[0], settings=settings, db=mongo_db)

    conn = redis.Redis.from_url(settings.redis_url.get_secret_value())

    def lose_messages() -> None:  # every message of this namespace disappears (queue, delay queue, bodies)
        keys = list(conn.scan_iter(f"{settings.redis_namespace}*", count=1000))
        if keys:
            conn.delete(*keys)

    reaper = next(m for m in broker.middleware if isinstance(m, LeaseReaper))
    previous = dramatiq.get_broker()
    dramatiq.set_broker(broker)  # the runner re-sends a deferred task through the global broker
    try:
        yield broker, probe, jobs, reaper, lose_messages, TasksDAO.for_kind(mongo_db, "probe")
    finally:
        dramatiq.set_broker(previous)
        lose_messages()
        broker.close()
        conn.close()


def test_a_pending_task_whose_message_was_lost_is_resent_after_the_grace_and_runs(resend_setup):
    broker, probe, jobs, reaper, lose_messages, dao = resend_setup
    runs: list[str] = []
    jobs.append(lambda ctx: runs.append(ctx.task.id) or {"ran": True})
    task = dao.create(ProbeRequest(), max_attempts=2).task
    message = probe.send(task.id)
    stamped = dao.get_raw(task.id)  # after_enqueue stamped the send: due now, re-send one grace later
    assert stamped["resend_at_ms"] - stamped["due_ms"] == 1000 and stamped["resends"] == 0
    dao.set_broker_message_id(task.id, message.message_id)
    lose_messages()

    assert reaper.reap_once(broker) == 0  # not overdue yet: its message may still be on its way
    time.sleep(1.1)
    assert reaper.reap_once(broker) == 1
    assert reaper.reap_once(broker) == 0  # taken once; the next re-send would wait 2 x grace
    resent = dao.get_raw(task.id)
    assert resent["resends"] == 1 and resent["resend_at_ms"] - resent["due_ms"] == 2000
    assert resent["broker_message_id"] != message.message_id

    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join("probe", timeout=20_000)
        worker.join()
    finally:
        worker.stop()
    done = dao.get(task.id)
    assert done.status is TaskStatus.done and done.result == {"ran": True} and runs == [task.id]
    assert reaper.reap_once(broker) == 0  # a finished task is never re-sent


def test_a_deferred_task_is_not_resent_before_its_due_time(resend_setup, mongo_db):
    broker, probe, jobs, reaper, lose_messages, dao = resend_setup

    def wait(ctx: TaskContext) -> dict:
        raise TaskDeferred("waiting: lock held", delay_ms=2500)

    jobs.append(wait)
    task = dao.create(ProbeRequest(), max_attempts=1).task
    sent_ms = int(time.time() * 1000)
    assert run_task("probe", task.id, wait, settings=reaper.settings, db=mongo_db) is TaskStatus.pending
    deferred = dao.get_raw(task.id)
    assert deferred["due_ms"] >= sent_ms + 2500 and deferred["resend_at_ms"] == deferred["due_ms"] + 1000
    lose_messages()  # the delayed message is gone too: only the sweep can bring the task back

    time.sleep(1.5)  # one grace after the deferral, but before the task is due
    assert reaper.reap_once(broker) == 0
    time.sleep(max(0.0, (deferred["resend_at_ms"] - time.time() * 1000) / 1000) + 0.1)
    assert reaper.reap_once(broker) == 1
    assert dao.get(task.id).status is TaskStatus.pending
