"""TasksDAO against a real MongoDB wire server (nx-27017): idempotency, claim, lease, CAS, reaping."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from pydantic import ValidationError

from dao.task_documents import (
    FineTuningRequest,
    ProbeRequest,
    TaskStatus,
    normalize_embedding_model_id,
    utcnow,
)
from dao.tasks import LeaseLost, TasksDAO, TaskStateError

RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def probes(mongo_db) -> TasksDAO:
    return TasksDAO.for_kind(mongo_db, "probe")


def test_model_id_formats():
    assert normalize_embedding_model_id(RUN_ID) == f"run:{RUN_ID}"
    assert normalize_embedding_model_id(f"run:{RUN_ID.upper()}") == f"run:{RUN_ID}"
    assert normalize_embedding_model_id("base:all-MiniLM-L6-v2") == "base:all-MiniLM-L6-v2"
    assert normalize_embedding_model_id("models:/clicktune-text@champion") == "models:/clicktune-text@champion"
    for bad in ("", "run:123", "base:gpt-17", "models:/x", "s3://bucket/model", RUN_ID + "0"):
        with pytest.raises(ValueError):
            normalize_embedding_model_id(bad)


def test_bad_fine_tuning_requests_are_clear_errors():
    with pytest.raises(ValidationError, match="embedding_model_id"):
        FineTuningRequest(embedding_model_id="my-model", batch_id="b1")
    with pytest.raises(ValidationError, match="batch_id"):
        FineTuningRequest(embedding_model_id=RUN_ID)
    with pytest.raises(ValidationError, match="batch_id"):
        FineTuningRequest(embedding_model_id=RUN_ID, batch_id="  ")
    with pytest.raises(ValidationError, match="learning_rate"):
        FineTuningRequest(embedding_model_id=RUN_ID, batch_id="b1", options={"learning_rate": 1})
    with pytest.raises(ValidationError, match="max_evals"):
        FineTuningRequest(embedding_model_id=RUN_ID, batch_id="b1", options={"max_evals": 0})
    with pytest.raises(ValidationError, match="model_line"):  # no MLflow filter can hold both quotes
        FineTuningRequest(embedding_model_id=RUN_ID, batch_id="b1", options={"model_line": "it's \"x\""})
    assert FineTuningRequest(embedding_model_id=RUN_ID, batch_id="b1", options={"model_line": "o'brien"})


def test_create_is_idempotent_under_concurrency(mongo_db):
    dao = TasksDAO.for_kind(mongo_db, "fine_tuning")
    request = FineTuningRequest(embedding_model_id="base:all-MiniLM-L6-v2", batch_id="b1", idempotency_key="k-1")
    results, errors = [], []

    def create():
        try:
            results.append(dao.create(request, max_attempts=3))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.task.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert mongo_db.fine_tuning_tasks.count_documents({"idempotency_key": "k-1"}) == 1
    # Tasks without a key are never conflated by the unique index.
    a = dao.create(FineTuningRequest(embedding_model_id=RUN_ID, batch_id="b2"))
    b = dao.create(FineTuningRequest(embedding_model_id=RUN_ID, batch_id="b2"))
    assert a.created and b.created and a.task.id != b.task.id
    stored = dao.get(a.task.id)
    assert stored.embedding_model_id == f"run:{RUN_ID}" and stored.status is TaskStatus.pending


def test_claim_is_exclusive_and_lease_expiry_lets_another_take_it(probes):
    task = probes.create(ProbeRequest(seconds=1), max_attempts=2).task
    claimed = probes.claim(task.id, "w1", lease_s=30)
    assert claimed.status is TaskStatus.processing and claimed.attempt == 1 and claimed.lease_owner == "w1"
    assert probes.claim(task.id, "w2", lease_s=30) is None  # live lease: a redelivery does nothing
    later = utcnow() + timedelta(seconds=31)
    again = probes.claim(task.id, "w2", lease_s=30, now=later)
    assert again.lease_owner == "w2" and again.attempt == 2
    with pytest.raises(LeaseLost):
        probes.heartbeat(task.id, "w1", lease_s=30)
    assert probes.set_progress(task.id, "w1", {"stage": "stale"}) is False
    assert probes.finish(task.id, "w1", TaskStatus.done) is False  # lost CAS, not overwritten
    assert probes.heartbeat(task.id, "w2", lease_s=30) is False
    assert probes.set_progress(task.id, "w2", {"stage": "sleeping", "fraction": 0.5})
    assert probes.finish(task.id, "w2", TaskStatus.done, result={"slept_s": 1})
    done = probes.get(task.id)
    assert done.status is TaskStatus.done and done.finished_at is not None and done.lease_owner is None
    assert done.progress.stage == "sleeping" and done.result == {"slept_s": 1}
    assert probes.claim(task.id, "w3", lease_s=30, now=later + timedelta(hours=1)) is None  # terminal


def test_cancel_pending_and_processing(probes):
    pending = probes.create(ProbeRequest()).task
    assert probes.request_cancel(pending.id).status is TaskStatus.canceled
    assert probes.claim(pending.id, "w", lease_s=10) is None
    running = probes.create(ProbeRequest()).task
    probes.claim(running.id, "w", lease_s=10)
    after = probes.request_cancel(running.id)
    assert after.status is TaskStatus.processing and after.cancel_requested
    assert probes.heartbeat(running.id, "w", lease_s=10) is True
    assert probes.request_cancel("nope") is None


def test_reap_expired_requeues_then_fails_when_attempts_are_exhausted(probes):
    task = probes.create(ProbeRequest(), max_attempts=2).task
    t0 = utcnow()
    probes.claim(task.id, "dead-1", lease_s=5, now=t0)
    assert probes.reap_expired(t0 + timedelta(seconds=1)) == []  # lease still live
    reaped = probes.reap_expired(t0 + timedelta(seconds=6))
    assert [(r.task_id, r.status) for r in reaped] == [(task.id, TaskStatus.pending)]
    assert probes.reap_expired(t0 + timedelta(seconds=6)) == []  # nothing twice
    back = probes.get(task.id)
    assert back.status is TaskStatus.pending and back.lease_owner is None and "retrying" in back.detail
    probes.claim(task.id, "dead-2", lease_s=5, now=t0 + timedelta(seconds=7))
    reaped = probes.reap_expired(t0 + timedelta(seconds=20))
    assert [r.status for r in reaped] == [TaskStatus.failed]
    failed = probes.get(task.id)
    assert failed.status is TaskStatus.failed and "no attempts left (2/2)" in failed.detail
    assert failed.finished_at is not None


def test_restart_creates_one_new_attempt_document(probes):
    task = probes.create(ProbeRequest(seconds=2, refuse="bad input")).task
    with pytest.raises(TaskStateError):
        probes.restart(task.id)
    probes.claim(task.id, "w", lease_s=5)
    probes.finish(task.id, "w", TaskStatus.refused, detail="bad input")
    first = probes.restart(task.id)
    second = probes.restart(task.id)
    assert first.created and not second.created and first.task.id == second.task.id
    new = first.task
    assert new.parent_id == task.id and new.status is TaskStatus.pending and new.attempt == 0
    assert new.seconds == 2 and new.refuse == "bad input"
    assert probes.get(task.id).status is TaskStatus.refused  # the old record is untouched
    assert [t.id for t in probes.list(status="pending")] == [new.id]


def test_detail_is_bounded(probes):
    task = probes.create(ProbeRequest()).task
    probes.claim(task.id, "w", lease_s=5)
    probes.finish(task.id, "w", TaskStatus.failed, detail="x" * 10_000)
    assert len(probes.get(task.id).detail) <= 2000


def test_a_take_over_starts_with_empty_progress(probes):
    task = probes.create(ProbeRequest(), max_attempts=2).task
    t0 = utcnow()
    probes.claim(task.id, "dead", lease_s=5, now=t0)
    assert probes.set_progress(task.id, "dead", {"stage": "training", "fraction": 0.7, "step": 120})
    taken = probes.claim(task.id, "next", lease_s=5, now=t0 + timedelta(seconds=6))  # the lease expired
    assert taken.attempt == 2 and taken.progress.model_dump(exclude_none=True) == {}
    assert probes.get(task.id).progress.stage is None  # no earlier attempt's stage or step is shown
