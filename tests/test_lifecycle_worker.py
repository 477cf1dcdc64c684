"""Acceptance of the task lifecycle: a real ``clicktune worker`` process, real Redis, real Mongo wire server.

Leases are short here (3 s lease, 0.5 s heartbeat, see tests/fixtures/worker.py) so crash and
cancel scenarios take seconds. The probe kind records each execution of its body in
``probe_executions``, which is how "one execution" is counted independently of the lifecycle code.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid

import dramatiq
import pytest

from dao.task_documents import TaskStatus
from worker.client import ClicktuneClient, InvalidRequest
from tests.polling import wait_for

RUN_ID = "0123456789abcdef0123456789abcdef"


def executions(client: ClicktuneClient, task_id: str) -> list[dict]:
    return list(client.db["probe_executions"].find({"task_id": task_id}))


def wait_processing(client: ClicktuneClient, task_id: str, timeout: float = 20.0):
    return wait_for(lambda: (t := client.status(task_id, "probe")).status is TaskStatus.processing and t,
                    timeout, what=f"{task_id} to be processing")


def test_fine_tuning_task_goes_from_enqueue_to_a_final_status_in_a_worker_process(start_worker, clicktune_client,
                                                                                 worker_env):
    start_worker()
    request = {"embedding_model_id": "base:all-MiniLM-L6-v2", "batch_id": "batch-1",
               "options": {"max_evals": 2, "loader": {"source": "local_file", "root_dir": "/tmp"}}}
    task_id = clicktune_client.enqueue_fine_tuning(request)
    task = clicktune_client.wait(task_id, timeout=60)
    # the real job refuses this request, not retried: its batch does not exist
    assert task.status is TaskStatus.refused, task.detail
    assert task.created_at <= task.started_at <= task.finished_at
    assert "does not exist" in task.detail
    assert task.attempt == 1 and task.lease_owner is None
    assert task.broker_message_id  # the id of the message that was sent
    assert task.options.max_evals == 2

    # A probe reports progress while it runs; another process reads the same status.
    probe_id = clicktune_client.enqueue_probe(1.5)
    running = wait_for(lambda: (t := clicktune_client.status(probe_id)).progress.fraction and t, 20,
                       what="progress")
    assert running.status is TaskStatus.processing and 0 < running.progress.fraction < 1
    assert running.progress.stage == "sleeping" and running.lease_expires_at is not None
    done = clicktune_client.wait(probe_id, timeout=30)
    assert done.status is TaskStatus.done and done.result["slept_s"] >= 1.5
    env = {**os.environ, **worker_env}
    out = subprocess.run([sys.executable, "-m", "worker.cli.tasks_cli", "status", probe_id, "--json"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    seen = json.loads(out)
    assert seen["_id"] == probe_id and seen["status"] == "done" and seen["started_at"] and seen["finished_at"]
    assert seen["broker_message_id"] == done.broker_message_id
    assert "mongodb://" not in out and "redis://" not in out


def _enqueue_with_key(settings_json: str, key: str, barrier, results) -> None:
    from worker.client import ClicktuneClient
    from worker.settings import Settings

    client = ClicktuneClient(Settings.model_validate_json(settings_json))
    barrier.wait(timeout=60)
    results.put(client.enqueue_probe(0.5, idempotency_key=key))


def _settings_json(settings) -> str:
    data = settings.model_dump(mode="json")
    data["mongo_url"] = settings.mongo_url.get_secret_value()
    data["redis_url"] = settings.redis_url.get_secret_value()
    return json.dumps(data)


@pytest.mark.slow
def test_same_idempotency_key_from_8_concurrent_clients_gives_one_task_and_one_execution(
        start_worker, clicktune_client, worker_settings):
    start_worker()
    key = f"nightly-{uuid.uuid4().hex[:6]}"
    ctx = multiprocessing.get_context("fork")  # 8 separate client processes, each with its own connections
    barrier, results = ctx.Barrier(8), ctx.Queue()
    clients = [ctx.Process(target=_enqueue_with_key, args=(_settings_json(worker_settings), key, barrier, results))
               for _ in range(8)]
    for process in clients:
        process.start()
    ids = [results.get(timeout=120) for _ in clients]
    for process in clients:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert len(set(ids)) == 1
    task_id = ids[0]
    assert clicktune_client.db["probe_tasks"].count_documents({"idempotency_key": key}) == 1
    assert clicktune_client.wait(task_id, timeout=30).status is TaskStatus.done
    # Enqueueing the same key again later returns the same finished task and runs nothing.
    assert clicktune_client.enqueue_probe(0.5, idempotency_key=key) == task_id
    time.sleep(1.0)
    assert len(executions(clicktune_client, task_id)) == 1
    assert clicktune_client.status(task_id).attempt == 1


def test_the_same_message_delivered_twice_during_a_run_executes_once(start_worker, clicktune_client):
    start_worker(threads=2)
    task_id = clicktune_client.enqueue_probe(2.0)
    task = wait_processing(clicktune_client, task_id)
    queue = clicktune_client.settings.queue_name("probe")
    duplicate = dramatiq.Message(queue_name=queue, actor_name="probe", args=(task_id,), kwargs={}, options={},
                                 message_id=task.broker_message_id)
    clicktune_client.broker.enqueue(duplicate)
    done = clicktune_client.wait(task_id, timeout=30)
    assert done.status is TaskStatus.done and done.attempt == 1
    assert len(executions(clicktune_client, task_id)) == 1


@pytest.mark.slow
def test_kill_9_mid_task_is_taken_back_after_the_lease_and_finishes_once(start_worker, clicktune_client):
    first = start_worker()
    task_id = clicktune_client.enqueue_probe(2.5)
    before = wait_processing(clicktune_client, task_id)
    # mid-task means the body has started: claimed *and* its execution recorded, then kill
    wait_for(lambda: executions(clicktune_client, task_id), 20, what="the first execution to start")
    first.kill()
    killed_at = time.monotonic()
    start_worker()  # another worker: its lease reaper takes the task back once the lease expires
    done = clicktune_client.wait(task_id, timeout=60)
    assert done.status is TaskStatus.done, done.detail
    assert done.attempt == 2 and done.lease_owner != before.lease_owner
    assert time.monotonic() - killed_at >= 2.0  # not before the 3 s lease could expire
    runs = executions(clicktune_client, task_id)
    assert len(runs) == 2 and sum(r["finished"] for r in runs) == 1


def test_cancel_of_a_pending_task_is_immediate_and_it_never_runs(start_worker, clicktune_client):
    task_id = clicktune_client.enqueue_probe(5.0)  # no worker yet: stays pending
    canceled = clicktune_client.cancel(task_id)
    assert canceled.status is TaskStatus.canceled and canceled.finished_at is not None
    start_worker()
    marker = clicktune_client.enqueue_probe(0.0)  # processed after the canceled task's message
    assert clicktune_client.wait(marker, timeout=30).status is TaskStatus.done
    time.sleep(0.5)
    assert clicktune_client.status(task_id).status is TaskStatus.canceled
    assert executions(clicktune_client, task_id) == []


def test_cancel_of_a_running_task_stops_it_within_a_heartbeat(start_worker, clicktune_client):
    start_worker()
    task_id = clicktune_client.enqueue_probe(30.0)
    wait_processing(clicktune_client, task_id)
    asked = time.monotonic()
    assert clicktune_client.cancel(task_id).cancel_requested
    done = clicktune_client.wait(task_id, timeout=10, poll_s=0.05)
    elapsed = time.monotonic() - asked
    assert done.status is TaskStatus.canceled and done.detail == "canceled on request"
    heartbeat = clicktune_client.settings.heartbeat_seconds
    assert elapsed < heartbeat + 2.0, elapsed  # one heartbeat, plus slack for a loaded 2-core machine
    assert [r["finished"] for r in executions(clicktune_client, task_id)] == [False]


def test_bad_requests_are_errors_at_enqueue_or_refused_and_the_worker_keeps_running(start_worker, clicktune_client):
    worker = start_worker()
    for bad, field in [
        ({"embedding_model_id": "my-favourite-model", "batch_id": "b1"}, "embedding_model_id"),
        ({"embedding_model_id": "base:all-MiniLM-L6-v2"}, "batch_id"),
        ({"embedding_model_id": RUN_ID, "batch_id": "b1", "options": {"epochs": 3}}, "options.epochs"),
        ({"embedding_model_id": RUN_ID, "batch_id": "b1", "options": {"batch_size": "big"}}, "batch_size"),
    ]:
        with pytest.raises(InvalidRequest, match=field):
            clicktune_client.enqueue_fine_tuning(bad)
    assert clicktune_client.db["fine_tuning_tasks"].count_documents({}) == 0

    # A document that bypassed the client (old version, manual insert) is refused by the worker.
    stored = clicktune_client.dao("fine_tuning").create(
        {"embedding_model_id": RUN_ID, "batch_id": "b1"}, max_attempts=3).task
    clicktune_client.db["fine_tuning_tasks"].update_one({"_id": stored.id}, {"$set": {"options": {"nope": "Hunter2-77aa"}}})
    clicktune_client.send("fine_tuning", stored.id)
    refused = clicktune_client.wait(stored.id, timeout=30)
    assert refused.status is TaskStatus.refused and "nope" in refused.detail and refused.attempt == 1
    assert "Hunter2-77aa" not in refused.detail  # the field is named, its value is not echoed

    # A job that refuses its input is not retried.
    probe_id = clicktune_client.enqueue_probe(0.0, refuse="batch b7 has no clicks")
    refused_probe = clicktune_client.wait(probe_id, timeout=30)
    assert refused_probe.status is TaskStatus.refused and refused_probe.detail == "batch b7 has no clicks"

    marker = clicktune_client.enqueue_probe(0.2)
    assert clicktune_client.wait(marker, timeout=30).status is TaskStatus.done
    assert worker.alive()
    assert len(executions(clicktune_client, probe_id)) == 1 and clicktune_client.status(probe_id).attempt == 1


def test_infrastructure_errors_are_retried_with_backoff_then_failed(start_worker, clicktune_client):
    start_worker()  # max_retries=2 → at most 3 attempts
    flaky = clicktune_client.enqueue_probe(0.0, fail_times=1)
    broken = clicktune_client.enqueue_probe(0.0, fail_times=10)
    ok = clicktune_client.wait(flaky, timeout=30)
    assert ok.status is TaskStatus.done and ok.attempt == 2 and ok.detail is None
    failed = clicktune_client.wait(broken, timeout=30)
    assert failed.status is TaskStatus.failed and failed.attempt == 3
    assert "attempt 3/3 failed: ProbeFailure: diagnostic failure on attempt 3" in failed.detail
    assert len(executions(clicktune_client, broken)) == 3


def test_time_limit_exceeded_ends_failed_not_processing(start_worker, clicktune_client):
    start_worker()
    task_id = clicktune_client.enqueue_probe(30.0, time_limit_s=1.0)
    failed = clicktune_client.wait(task_id, timeout=15)
    assert failed.status is TaskStatus.failed and "time limit of 1s exceeded" in failed.detail
    time.sleep(1.0)
    assert len(executions(clicktune_client, task_id)) == 1  # not retried


def test_restart_runs_a_new_attempt_of_a_finished_task(start_worker, clicktune_client):
    task_id = clicktune_client.enqueue_probe(0.3)
    clicktune_client.cancel(task_id)
    start_worker()
    new_id = clicktune_client.restart(task_id)
    assert new_id != task_id and clicktune_client.restart(task_id) == new_id
    new = clicktune_client.wait(new_id, timeout=30)
    assert new.status is TaskStatus.done and new.parent_id == task_id and new.seconds == 0.3
    assert clicktune_client.status(task_id).status is TaskStatus.canceled


def test_a_failed_send_leaves_no_task_and_an_unsent_one_is_resent_by_the_same_key(start_worker, clicktune_client,
                                                                                  worker_settings):
    from dao.task_documents import ProbeRequest
    from worker.local_services import free_port

    dead = worker_settings.model_copy(update={"redis_url": type(worker_settings.redis_url)(
        f"redis://127.0.0.1:{free_port()}/0")})
    with pytest.raises(Exception):
        ClicktuneClient(dead).enqueue_probe(0.0, idempotency_key="resend-me")
    assert clicktune_client.dao("probe").find_by_idempotency_key("resend-me") is None  # rolled back
    # a creator killed between insert and send leaves an unsent document: the same key re-sends it
    unsent = clicktune_client.dao("probe").create(ProbeRequest(idempotency_key="resend-me")).task
    start_worker()
    assert clicktune_client.enqueue_probe(0.0, idempotency_key="resend-me") == unsent.id
    done = clicktune_client.wait(unsent.id, timeout=30)
    assert done.status is TaskStatus.done and done.broker_message_id
