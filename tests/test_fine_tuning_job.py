"""The ``fine_tuning`` job through the real lifecycle runner (in-process), real Mongo wire server and a
real ``mlflow server`` process. The start model is a tiny random BERT logged to MLflow (``run:<id>``),
the clickstream a synthetic topic world ingested through ``ClickstreamDAO``, the items plain text
files read by the ``local_file`` loader. A worker process is not the point here (see
``tests/test_end_to_end.py``)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from dao.clickstream import ClickstreamDAO
from dao.task_documents import FineTuningRequest, TaskStatus
from dao.tasks import TasksDAO
from tests.fixtures.fine_tuning import clickstream_records, ingest_and_release, write_items
from worker.jobs.fine_tuning.quality_gate import quality_gate
from worker.jobs import fine_tuning_job
from worker.lifecycle import run_task
from worker.settings import Settings


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------

@pytest.fixture
def start_run_id(tiny_start_run) -> str:
    return tiny_start_run


@pytest.fixture
def settings(mongo_server, mongo_db, mlflow_server, tmp_path) -> Settings:
    return Settings(mongo_url=mongo_server.url, mongo_db=mongo_db.name, mlflow_tracking_uri=mlflow_server.url,
                    chroma_path=str(tmp_path / "chroma"), heartbeat_seconds=0.3, lease_seconds=30, max_retries=0)


@pytest.fixture
def world(tmp_path, mongo_db):
    """(items dir, items, batch id) of a released batch."""
    items, records = clickstream_records()
    items_dir = write_items(tmp_path / "items", items)
    return items_dir, items, ingest_and_release(mongo_db, records)


def options(items_dir: Path, **extra) -> dict:
    return {"loader": {"source": "local_file", "root_dir": str(items_dir)}, "max_evals": 1, "num_epochs": 2,
            "batch_size": 4, "max_steps": 12, "test_size": 0.25, "model_line": f"test-{uuid.uuid4().hex[:8]}",
            "settings": {"step_size": 50}, **extra}


def run_job(db, settings, **request):
    dao = TasksDAO.for_kind(db, "fine_tuning")
    task_id = dao.create(FineTuningRequest(**request), max_attempts=1).task.id
    status = run_task("fine_tuning", task_id, fine_tuning_job.run, settings=settings, db=db)
    return status, dao.get(task_id)


# --------------------------------------------------------------------------------------------
# refusals: unusable input ends ``refused`` and is never retried
# --------------------------------------------------------------------------------------------

def test_unknown_batch_empty_loader_invalid_loader_and_no_clicks_are_refused(mongo_db, settings, tmp_path, start_run_id):
    model = f"run:{start_run_id}"
    status, task = run_job(mongo_db, settings, embedding_model_id=model, batch_id="no-such-batch",
                           options=options(tmp_path))
    assert status is TaskStatus.refused and "does not exist" in task.detail and task.attempt == 1

    items, records = clickstream_records(n_sessions=20, seed=7)
    for record in records:
        record["events"] = []
    write_items(tmp_path / "items", items)
    batch_id = ingest_and_release(mongo_db, records)
    status, task = run_job(mongo_db, settings, embedding_model_id=model, batch_id=batch_id,
                           options=options(tmp_path / "items"))
    assert status is TaskStatus.refused and "no clicks" in task.detail, task.detail

    status, task = run_job(mongo_db, settings, embedding_model_id=model, batch_id=batch_id,
                           options={**options(tmp_path / "items"), "loader": {}})
    assert status is TaskStatus.refused and "options.loader is empty" in task.detail

    status, task = run_job(mongo_db, settings, embedding_model_id=model, batch_id=batch_id,
                           options={**options(tmp_path / "items"), "loader": {"source": "ftp", "host": "x"}})
    assert status is TaskStatus.refused and "options.loader is invalid" in task.detail

    status, task = run_job(mongo_db, settings, embedding_model_id=model, batch_id=batch_id,
                           options=options(tmp_path / "items", settings={"loss_func": "nope"}))
    assert status is TaskStatus.refused and "unknown loss" in task.detail


def test_unknown_start_run_is_refused_and_every_item_missing_is_refused(mongo_db, settings, world, tmp_path):
    items_dir, _, batch_id = world
    status, task = run_job(mongo_db, settings, embedding_model_id="run:" + "0" * 32, batch_id=batch_id,
                           options=options(items_dir))
    assert status is TaskStatus.refused and "cannot load start model" in task.detail, task.detail

    empty = tmp_path / "empty"
    empty.mkdir()
    status, task = run_job(mongo_db, settings, embedding_model_id="base:all-MiniLM-L6-v2", batch_id=batch_id,
                           options=options(empty))
    assert status is TaskStatus.refused and "no usable session" in task.detail, task.detail
    # the clickstream is untouched: the batch is still fully readable for a retry
    assert sum(1 for _ in ClickstreamDAO(mongo_db).iter_batch(batch_id)) == 160


# --------------------------------------------------------------------------------------------
# the main path: missing items counted, registered model, metrics, report; and its re-run
# --------------------------------------------------------------------------------------------

def test_trains_registers_counts_missing_items_and_reports(mongo_db, settings, world, start_run_id, mlflow_server):
    items_dir, items, batch_id = world
    missing = ["d3", "d17", "d42"]
    for object_id in missing:
        (items_dir / f"{object_id}.txt").unlink()
    request = dict(embedding_model_id=start_run_id, batch_id=batch_id, options=options(items_dir))

    status, task = run_job(mongo_db, settings, **request)

    assert status is TaskStatus.done, task.detail
    result = task.result
    assert result.items_missing == 3 and result.items_total == 60
    assert 0 < result.sessions_used <= 160 and result.sessions_total == 160
    assert result.trials_trained == 1 and result.trials_skipped == 0 and result.iteration_mode == "continue"
    main = result.main_metric
    assert main == "val_ndcg@10" and set(result.metrics_before) >= {main, "val_loss"}
    assert result.quality_metric == main  # no exploration sessions in this log: the main metric chose
    # the kept weights beat the start, or sit within the held-out noise of it (then the gate refuses a deploy)
    after, before = result.metrics_after[main], result.metrics_before[main]
    assert after >= before or (result.quality_gate_passed is False and before - after < 0.05), (before, after)
    assert result.deployed is False and result.deploy_reason.startswith("deploy_as_blue not requested")
    assert result.reindex_task_id is None
    # the topic world has 16 queries and holds out 4; the best trained checkpoint ties the start on each
    # of them, so the run kept the start weights: the registered candidate is the start model and the gate
    # has nothing to compare. Its decision is the keeper's test of that checkpoint, on the main metric's
    # own-results twin (each query among its own shown results; no exploration sessions in this log)
    gate, own = result.gate, "val_own_ndcg@10"
    assert gate.rule == "keeper" and gate.metric == own and gate.n_queries == 4 and gate.min_gate_queries == 10
    assert gate.passed is False and result.quality_gate_passed is False
    assert gate.reason.startswith("nothing to deploy, the candidate holds the start weights: the best trained "
                                  "checkpoint (step ")
    assert "(paired SE over 4 held-out queries) = 0.0 SE → does not beat the start: the start weights were kept" \
        in gate.reason
    assert gate.reason in result.deploy_reason
    assert gate.before == gate.after == result.metrics_before[own] == result.metrics_after[own]
    assert gate.standard_error >= 0 and f"{gate.mean_difference:+.4f} ± {gate.standard_error:.4f}" in gate.reason
    assert task.progress.stage == "finished" and task.progress.fraction == 1.0

    client = MlflowClient(tracking_uri=mlflow_server.url)
    version = client.get_model_version_by_alias(result.registered_model_name, "candidate")
    assert version.version == result.registered_model_version and version.run_id == result.best_run_id
    # the model choice was recorded on the version when it was made; the result reads it from there
    assert json.loads(version.tags["clicktune.metrics_after"]) == pytest.approx(result.metrics_after)
    assert json.loads(version.tags["clicktune.metrics_before"]) == pytest.approx(result.metrics_before)
    assert json.loads(version.tags["clicktune.keeper"])["decision"] == "start kept"
    assert result.best_model_uri == f"models:/{result.registered_model_name}/{result.registered_model_version}"
    artifacts = [a.path for a in client.list_artifacts(result.best_run_id, "report")]
    assert artifacts == [result.report_artifact] == ["report/fine_tuning_report.png"]
    local = client.download_artifacts(result.best_run_id, result.report_artifact)
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same iteration again (a new task, e.g. restarted): the finished trial is skipped, not retrained,
    # and the metrics come back from the choice recorded in MLflow
    status, again = run_job(mongo_db, settings, **{**request, "options": {**request["options"],
                                                                         "model_line": result.model_line}})
    assert status is TaskStatus.done, again.detail
    assert again.result.trials_trained == 0 and again.result.trials_skipped == 1
    assert again.result.best_run_id == result.best_run_id
    assert again.result.registered_model_version == result.registered_model_version
    assert again.result.metrics_before[main] == pytest.approx(result.metrics_before[main])
    assert again.result.metrics_after[main] == pytest.approx(result.metrics_after[main])
    # the per-query values come back from the run too, so the re-run's gate decides on the same figures
    assert again.result.gate.model_dump() == pytest.approx(result.gate.model_dump())


def test_quality_gate_failure_is_done_without_deploy(mongo_db, settings, world, start_run_id):
    items_dir, _, batch_id = world
    status, task = run_job(mongo_db, settings, embedding_model_id=start_run_id, batch_id=batch_id,
                           deploy_as_blue=True, options=options(items_dir, min_improvement=1.0, max_steps=2,
                                                                min_gate_queries=4, gate_z=0.5))
    assert status is TaskStatus.done, task.detail
    assert task.result.deployed is False and task.result.quality_gate_passed is False
    assert task.result.deploy_reason.startswith("not deployed:")
    # the decision's figures are in the task document and its reason, with the task's gate options; two
    # steps of the tiny model tie the start on every held-out query, so the run kept the start weights and
    # the reason is the keeper's test of the best trained checkpoint (the same paired figures)
    gate = task.result.gate
    assert gate.rule == "keeper" and gate.n_queries == 4 and gate.gate_z == 0.5 and gate.min_improvement == 1.0
    assert f"{gate.mean_difference:+.4f} ± {gate.standard_error:.4f} (paired SE over 4 held-out queries)" in gate.reason
    assert "does not beat the start: the start weights were kept" in gate.reason, gate.reason
    assert task.result.reindex_task_id is None
    assert TasksDAO.for_kind(mongo_db, "reindex").list() == []


def test_open_batch_is_released_once_and_cancel_stops_training(mongo_db, settings, tmp_path, start_run_id):
    items, records = clickstream_records(seed=3)
    items_dir = write_items(tmp_path / "items", items)
    batch_id = ingest_and_release(mongo_db, records, release=False)
    dao = TasksDAO.for_kind(mongo_db, "fine_tuning")
    task_id = dao.create(FineTuningRequest(
        embedding_model_id=start_run_id, batch_id=batch_id,
        options=options(items_dir, num_epochs=1000, max_steps=None))).task.id
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault(
        "status", run_task("fine_tuning", task_id, fine_tuning_job.run, settings=settings, db=mongo_db)))
    thread.start()
    deadline = time.monotonic() + 120
    while (task := dao.get(task_id)).progress.stage != "training" or not (task.progress.step or 0) >= 1:
        assert time.monotonic() < deadline and thread.is_alive(), task
        time.sleep(0.1)
    batch = ClickstreamDAO(mongo_db).get_batch(batch_id)
    assert batch.status.value == "released" and batch.release_id == f"fine_tuning:{task_id}"
    dao.request_cancel(task_id)
    thread.join(60)
    assert not thread.is_alive()
    assert outcome["status"] is TaskStatus.canceled and dao.get(task_id).status is TaskStatus.canceled


# --------------------------------------------------------------------------------------------
# the gate itself
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("before, after, higher, margin, passed", [
    (0.50, 0.55, True, 0.0, True),
    (0.50, 0.50, True, 0.0, False),      # identical (fine_tune kept the start weights)
    (0.50, 0.52, True, 0.05, False),     # better, but not by the margin asked for
    (0.50, 0.40, False, 0.0, True),      # lower is better
    (float("nan"), 0.6, True, 0.0, False),
    (0.5, None, True, 0.0, False),
])
def test_quality_gate(before, after, higher, margin, passed):
    decision = quality_gate("val_x", before, after, higher_is_better=higher, min_improvement=margin)
    assert decision.passed is passed and decision.reason


def test_cancel_while_items_load_stops_before_training(mongo_db, settings, world, start_run_id, monkeypatch):
    items_dir, _, batch_id = world
    dao = TasksDAO.for_kind(mongo_db, "fine_tuning")
    task_id = dao.create(FineTuningRequest(embedding_model_id=start_run_id, batch_id=batch_id,
                                           options=options(items_dir))).task.id
    original = fine_tuning_job.load_items
    pages = []

    def load_and_cancel(loader, refs, **kwargs):
        on_page = kwargs.pop("on_page")

        def cancel_on_last_page(done, total):
            on_page(done, total)
            pages.append(done)
            if done == total:  # the cancel arrives as loading ends: the next stage must not start
                dao.request_cancel(task_id)
                time.sleep(settings.heartbeat_seconds * 2.5)  # the heartbeat relays the cancel

        return original(loader, refs, on_page=cancel_on_last_page, **kwargs)

    monkeypatch.setattr(fine_tuning_job, "load_items", load_and_cancel)
    status = run_task("fine_tuning", task_id, fine_tuning_job.run, settings=settings, db=mongo_db)
    task = dao.get(task_id)
    assert status is TaskStatus.canceled and task.status is TaskStatus.canceled
    assert pages == [60]  # one page: the items load in pages of 64
    assert task.progress.stage == "loading items"  # neither the start model nor training was reached
