"""run_task and the lifecycle middleware in-process, on the real Mongo wire server.

The acceptance scenarios with a separate worker process are in test_lifecycle_worker.py; these
cover paths that are hard to provoke from outside: a job that ignores its time limit, Dramatiq
giving up on a message before any claim, non-dict results, secrets in error messages.
"""

from __future__ import annotations

import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from pydantic import SecretStr

from dao.task_documents import ProbeRequest, TaskStatus
from dao.tasks import TasksDAO
from worker.broker import build_middleware
from worker.lifecycle import TaskContext, TaskDeferred, redact, run_task, safe_detail
from worker.settings import Settings

SECRET_URL = "mongodb://admin:hunter2-very-secret@db.internal:27017/?authSource=admin"


def fast_settings(**overrides) -> Settings:
    values = dict(lease_seconds=0.6, heartbeat_seconds=0.1, probe_time_limit_s=0.5, max_retries=1,
                  min_backoff_ms=10, max_backoff_ms=20, mongo_url=SecretStr(SECRET_URL), broker="stub")
    return Settings(**{**values, **overrides})


def test_redaction_removes_credentials():
    text = f"cannot connect to {SECRET_URL}; redis://:pw123456@cache:6379/0 password=abc token: xyz"
    clean = redact(text, [SecretStr("hunter2-very-secret")])
    assert "hunter2" not in clean and "pw123456" not in clean and "abc" not in clean and "xyz" not in clean
    assert "db.internal:27017" in clean  # where it failed stays readable
    detail = safe_detail(ConnectionError(f"refused by {SECRET_URL}" + "x" * 5000), [])
    assert detail.startswith("ConnectionError: refused by mongodb://***@db.internal") and len(detail) <= 2000


def test_a_validation_error_detail_names_fields_and_reasons_never_the_rejected_values():
    from pydantic import BaseModel, ConfigDict, ValidationError

    from worker.jobs.fine_tuning.items import create_task_loader
    from worker.lifecycle import TaskRefused

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        batch_size: int = 1

    secret = "Hunter2-0f9c"
    with pytest.raises(ValidationError) as raised:
        Options.model_validate({"batch_size": f"{secret}-a", "hint": f"{secret}-b"})
    assert secret in str(raised.value)  # pydantic's own text echoes the inputs
    detail = safe_detail(raised.value)
    assert secret not in detail and detail.startswith("ValidationError: batch_size: Input should be a valid integer")
    assert "hint: Extra inputs are not permitted" in detail

    # e.g. a fine-tuning task's loader config with a credential put in a field that does not exist
    with pytest.raises(TaskRefused) as refused:
        create_task_loader({"source": "local_file", "root_dir": "/data", "credentials": secret})
    assert secret not in refused.value.detail and "credentials: Extra inputs are not permitted" in refused.value.detail


def test_error_detail_never_carries_the_mongo_password(mongo_db):
    settings = fast_settings(max_retries=0)
    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest(), max_attempts=1).task

    def job(ctx: TaskContext) -> dict:
        raise ConnectionError(f"lost {ctx.settings.mongo_url.get_secret_value()}")

    assert run_task("probe", task.id, job, settings=settings, db=mongo_db) is TaskStatus.failed
    failed = dao.get(task.id)
    assert "hunter2" not in failed.detail and "attempt 1/1 failed: ConnectionError" in failed.detail


def test_a_job_that_ignores_its_time_limit_is_failed_by_the_lease_keeper(mongo_db):
    settings = fast_settings()
    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest(), max_attempts=2).task

    def stuck(ctx: TaskContext) -> dict:  # never checks anything (think: a long C call)
        time.sleep(2.5)
        return {"too": "late"}

    assert run_task("probe", task.id, stuck, settings=settings, db=mongo_db) is None  # result dropped
    failed = dao.get(task.id)
    assert failed.status is TaskStatus.failed and "time limit exceeded" in failed.detail
    assert failed.result == {} and failed.lease_owner is None


def test_non_dict_result_is_a_failure_with_a_reason(mongo_db):
    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest()).task
    assert run_task("probe", task.id, lambda ctx: ["x"], settings=fast_settings(), db=mongo_db) is TaskStatus.failed
    assert "expected a dict" in dao.get(task.id).detail


def test_progress_merges_fields_and_cancel_is_relayed_by_the_heartbeat(mongo_db):
    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest()).task
    seen = {}

    def job(ctx: TaskContext) -> dict:
        ctx.progress("training", 0.1, epoch=1, trial=1, trials_total=4)
        ctx.progress("training", 0.5, epoch=2)
        seen["progress"] = dao.get(task.id).progress.model_dump(exclude_none=True)
        dao.request_cancel(task.id)
        deadline = time.monotonic() + 5
        while not ctx.should_stop() and time.monotonic() < deadline:
            time.sleep(0.02)
        ctx.raise_if_canceled()
        return {}

    assert run_task("probe", task.id, job, settings=fast_settings(), db=mongo_db) is TaskStatus.canceled
    assert seen["progress"] == {"stage": "training", "fraction": 0.5, "epoch": 2, "trial": 1, "trials_total": 4}


def process_queue(broker: StubBroker, queue: str, fail_fast: bool) -> None:
    """Run a Dramatiq worker on ``broker`` until ``queue`` (delayed messages included) is empty."""
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        broker.join(queue, fail_fast=fail_fast, timeout=20_000)
        worker.join()
    finally:
        worker.stop()


def test_dramatiq_giving_up_before_any_claim_marks_the_task_failed(mongo_server, mongo_db):
    settings = fast_settings(mongo_url=SecretStr(mongo_server.url), mongo_db=mongo_db.name, max_retries=1)
    broker = StubBroker(middleware=build_middleware(settings))
    broker.emit_after("process_boot")
    calls = []

    @dramatiq.actor(actor_name="probe", queue_name="probe", broker=broker, max_retries=1)
    def probe(task_id: str) -> None:
        calls.append(task_id)
        raise OSError("mongo unreachable while claiming")  # fails before run_task could claim

    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest(), max_attempts=2).task
    probe.send(task.id)
    process_queue(broker, "probe", fail_fast=False)
    assert len(calls) == 2  # first try + max_retries
    failed = dao.get(task.id)
    assert failed.status is TaskStatus.failed
    assert failed.detail.startswith("gave up after 2 deliveries: OSError: mongo unreachable")


def test_a_deferred_task_goes_back_to_pending_uncounted_and_runs_again_after_the_delay(mongo_server, mongo_db):
    """TaskDeferred (e.g. a lock held elsewhere): pending with the reason, the attempt not used up,
    its message re-sent with the delay; the next delivery runs it."""
    settings = fast_settings(mongo_url=SecretStr(mongo_server.url), mongo_db=mongo_db.name, probe_time_limit_s=30)
    broker = StubBroker(middleware=build_middleware(settings))
    broker.emit_after("process_boot")
    runs: list[float] = []

    def job(ctx: TaskContext) -> dict:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise TaskDeferred("waiting: lock model:x is held by reindex:other", delay_ms=300)
        return {"runs": len(runs)}

    @dramatiq.actor(actor_name="probe", queue_name="probe", broker=broker, max_retries=0)
    def probe(task_id: str) -> None:
        run_task("probe", task_id, job, settings=settings, db=mongo_db)

    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest(), max_attempts=1).task
    previous = dramatiq.get_broker()
    dramatiq.set_broker(broker)  # the runner re-sends through the global broker, as in a worker
    try:
        assert run_task("probe", task.id, job, settings=settings, db=mongo_db) is TaskStatus.pending
        waiting = dao.get(task.id)
        assert waiting.status is TaskStatus.pending and waiting.attempt == 0 and waiting.lease_owner is None
        assert waiting.detail == "waiting: lock model:x is held by reindex:other; retrying in 0.3s"
        delayed = list(broker.queues["probe.DQ"].queue)
        assert [m for m in delayed if task.id in m.decode()]  # the re-sent message waits in the delay queue
        process_queue(broker, "probe", fail_fast=True)
    finally:
        dramatiq.set_broker(previous)
    done = dao.get(task.id)
    assert done.status is TaskStatus.done and done.result == {"runs": 2}
    assert done.attempt == 1  # max_attempts=1 and still done: the wait did not use the attempt up
    assert done.broker_message_id == waiting.broker_message_id and runs[1] - runs[0] >= 0.3


def test_a_deferral_whose_message_cannot_be_sent_releases_the_task_and_raises(mongo_server, mongo_db):
    """Re-sending failed (here: no such actor on the broker): the task is not left ``processing``."""
    settings = fast_settings(mongo_url=SecretStr(mongo_server.url), mongo_db=mongo_db.name)
    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest(), max_attempts=2).task
    previous = dramatiq.get_broker()
    dramatiq.set_broker(StubBroker())  # no "probe" actor declared on it
    try:
        def job(ctx: TaskContext) -> dict:
            raise TaskDeferred("waiting: lock held", delay_ms=100)

        with pytest.raises(dramatiq.errors.ActorNotFound):
            run_task("probe", task.id, job, settings=settings, db=mongo_db)
    finally:
        dramatiq.set_broker(previous)
    released = dao.get(task.id)
    assert released.status is TaskStatus.pending and released.lease_owner is None
    assert released.detail.startswith("waiting: lock held; re-sending failed (ActorNotFound")


class SourceMisconfigured(RuntimeError):
    """Stands for a loader's source-configuration error (a table that does not exist)."""

    permanent = True


def test_an_error_declaring_itself_permanent_is_refused_at_once(mongo_db):
    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest(), max_attempts=3).task
    runs = []

    def job(ctx: TaskContext) -> dict:
        runs.append(ctx.task.attempt)
        try:
            raise SourceMisconfigured("relation \"items\" does not exist")
        except SourceMisconfigured as exc:  # wrapped: the declaration is found on the cause
            raise RuntimeError("loading items failed") from exc

    assert run_task("probe", task.id, job, settings=fast_settings(), db=mongo_db) is TaskStatus.refused
    refused = dao.get(task.id)
    assert runs == [1] and refused.attempt == 1
    assert "attempt 1/3 failed: RuntimeError: loading items failed" in refused.detail
    assert "permanent: not retried" in refused.detail


def test_one_rule_decides_retry_fail_refuse_and_cancel():
    from dao.task_outcome import after_broker_gave_up, after_failed_attempt

    assert after_failed_attempt(1, 3, "boom").status is TaskStatus.pending
    assert after_failed_attempt(1, 3, "boom").detail == "boom; retrying (1/3 used)"
    assert after_failed_attempt(3, 3, "boom").status is TaskStatus.failed
    assert after_failed_attempt(1, 3, "boom", permanent=True).status is TaskStatus.refused
    assert after_failed_attempt(1, 3, "boom", permanent=True, cancel_requested=True).status is TaskStatus.canceled
    assert after_broker_gave_up("gave up", SourceMisconfigured("x")).status is TaskStatus.refused
    assert after_broker_gave_up("gave up", OSError("x")).status is TaskStatus.failed


def test_an_error_raised_after_a_cancel_request_ends_canceled(mongo_db):
    dao = TasksDAO.for_kind(mongo_db, "probe")
    task = dao.create(ProbeRequest(), max_attempts=3).task

    def job(ctx: TaskContext) -> dict:
        dao.request_cancel(task.id)
        deadline = time.monotonic() + 5
        while not ctx.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.02)
        raise ConnectionError("MLflow wait cut short")  # e.g. a retry loop that gave up on should_stop

    assert run_task("probe", task.id, job, settings=fast_settings(), db=mongo_db) is TaskStatus.canceled
    canceled = dao.get(task.id)
    assert canceled.attempt == 1 and canceled.detail.startswith("canceled; attempt 1/3 failed: ConnectionError")
