"""The continuous-operation scheduler against nx-27017 and the machine's Redis: racing instances,
restarts between release and enqueue, the interval condition, real ``clicktune schedule --once``
processes, and the policy as ``GET /v1/schedule`` shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from dao.clickstream import ClickstreamDAO
from dao.clickstream_documents import utcnow
from dao.tasks import TasksDAO
from worker.scheduler import STATE_COLLECTION, Scheduler

REPO = Path(__file__).resolve().parents[1]
CLICKTUNE = str(Path(sys.executable).parent / "clicktune")
START = "base:all-MiniLM-L6-v2"


def _sessions(n: int, prefix: str = "s") -> list[dict]:
    return [{"session_id": f"{prefix}{i}", "search_query": f"query {i}", "created_at": "2024-01-01T00:00:00Z",
             "search_results": [{"object_id": f"doc{i}", "rank": 1, "meta": {"path": f"doc{i}.txt"}}]}
            for i in range(n)]


@pytest.fixture
def schedule_settings(worker_settings):
    return worker_settings.model_copy(update={
        "schedule_model_line": "line-a", "schedule_embedding_model_id": START, "schedule_min_sessions": 5,
        "schedule_options": {"max_evals": 1, "max_steps": 2}, "schedule_tick_s": 0.2})


def _released(db) -> list:
    return [b for b in ClickstreamDAO(db).list_batches() if b.status.value == "released"]


def _tasks(db) -> list:
    return TasksDAO.for_kind(db, "fine_tuning").list()


@pytest.mark.parametrize("lock", [True, False], ids=["with-lock", "idempotency-keys-alone"])
def test_two_schedulers_racing_for_one_window_release_one_batch_and_enqueue_one_task(
        schedule_settings, mongo_db, clicktune_client, lock):
    ClickstreamDAO(mongo_db).ingest(_sessions(6))
    schedulers = [Scheduler(schedule_settings, db=mongo_db, lock=lock) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcomes = []

    def fire(scheduler: Scheduler) -> None:
        barrier.wait()
        outcomes.append(scheduler.tick())

    threads = [threading.Thread(target=fire, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    released, tasks = _released(mongo_db), _tasks(mongo_db)
    assert len(released) == 1 and len(tasks) == 1
    task = tasks[0]
    assert task.batch_id == released[0].batch_id and task.idempotency_key == released[0].release_id
    assert task.idempotency_key == f"schedule:line-a:{released[0].batch_id}"
    assert task.options.model_line == "line-a" and task.options.max_steps == 2 and task.deploy_as_blue
    fired = [o for o in outcomes if o.fired]
    assert fired and all(o.task_id == task.id and o.batch_id == task.batch_id for o in fired)
    if lock:
        assert len(fired) == 1
    # and the next check does nothing: the window is spent, no session arrived since
    later = schedulers[0].tick()
    assert not later.fired and "not due" in later.reason
    assert len(_released(mongo_db)) == 1 and len(_tasks(mongo_db)) == 1


def test_a_scheduler_restarted_between_release_and_enqueue_finishes_the_same_window(
        schedule_settings, mongo_db, clicktune_client):
    dao = ClickstreamDAO(mongo_db)
    dao.ingest(_sessions(5))
    window = f"schedule:line-a:{dao.open_batch().batch_id}"
    # what a scheduler that died right after releasing leaves behind
    mongo_db[STATE_COLLECTION].update_one({"_id": "line-a"}, {"$set": {"pending_window": window}}, upsert=True)
    batch = dao.release(window)
    dao.ingest(_sessions(2, prefix="late"))  # a new open batch, not due yet

    outcome = Scheduler(schedule_settings, db=mongo_db).tick()
    assert outcome.fired and outcome.window == window and outcome.batch_id == batch.batch_id
    assert [t.batch_id for t in _tasks(mongo_db)] == [batch.batch_id]
    assert not Scheduler(schedule_settings, db=mongo_db).tick().fired
    assert len(_released(mongo_db)) == 1 and len(_tasks(mongo_db)) == 1


def test_the_interval_fires_a_small_batch_once_per_interval(schedule_settings, mongo_db, clicktune_client):
    settings = schedule_settings.model_copy(update={"schedule_min_sessions": 1000, "schedule_interval_s": 3600})
    scheduler = Scheduler(settings, db=mongo_db)
    dao = ClickstreamDAO(mongo_db)
    assert "not due (0 sessions" in scheduler.tick().reason  # nothing open
    dao.ingest(_sessions(2))
    assert not scheduler.tick().fired  # the batch opened just now
    first = scheduler.tick(now=utcnow() + timedelta(hours=1, seconds=1))
    assert first.fired and "since the batch opened" in first.reason
    dao.ingest(_sessions(2, prefix="next"))
    assert not scheduler.tick(now=utcnow() + timedelta(minutes=30)).fired
    second = scheduler.tick(now=utcnow() + timedelta(hours=1, seconds=1))
    assert second.fired and "since the last firing" in second.reason and second.batch_id != first.batch_id
    assert len(_released(mongo_db)) == 2 and len(_tasks(mongo_db)) == 2


def test_not_configured_does_nothing(worker_settings, mongo_db):
    ClickstreamDAO(mongo_db).ingest(_sessions(3))
    outcome = Scheduler(worker_settings, db=mongo_db).tick()
    assert not outcome.fired and "no schedule configured" in outcome.reason
    assert _released(mongo_db) == []


def test_two_schedule_processes_at_once_fire_once(worker_env, mongo_db, clicktune_client):
    ClickstreamDAO(mongo_db).ingest(_sessions(6))
    env = {**os.environ, **worker_env, "PYTHONPATH": str(REPO), "CLICKTUNE_SCHEDULE_MODEL_LINE": "line-p",
           "CLICKTUNE_SCHEDULE_EMBEDDING_MODEL_ID": START, "CLICKTUNE_SCHEDULE_MIN_SESSIONS": "5"}
    processes = [subprocess.Popen([CLICKTUNE, "schedule", "--once"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    outcomes = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(o["fired"] for o in outcomes) >= 1
    assert len(_released(mongo_db)) == 1 and len(_tasks(mongo_db)) == 1


def test_the_api_shows_the_policy_and_the_last_firing(schedule_settings, mongo_db, clicktune_client):
    from fastapi.testclient import TestClient

    from worker.api import create_app
    from worker.api.auth import hash_key

    settings = schedule_settings.model_copy(update={"api_keys": [{"name": "t", "sha256": hash_key("k"), "scopes": ["tasks"]}]})
    http = TestClient(create_app(settings))
    ClickstreamDAO(mongo_db).ingest(_sessions(6))
    before = http.get("/v1/schedule", headers={"X-API-Key": "k"}).json()
    assert before["config"]["enabled"] and before["config"]["model_line"] == "line-a"
    assert before["open_batch_sessions"] == 6 and before["due"] == "6 sessions >= 5" and before["state"] is None
    outcome = Scheduler(settings, db=mongo_db).tick()
    after = http.get("/v1/schedule", headers={"X-API-Key": "k"}).json()
    assert after["state"]["last_task_id"] == outcome.task_id and after["state"]["last_batch_id"] == outcome.batch_id
    assert after["open_batch_id"] is None and after["due"] is None
