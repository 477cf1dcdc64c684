"""End to end through the real lifecycle runner (in-process), the real Mongo wire server, MLflow and
PostgreSQL: a permanent loader error (``SourceConfigError``, ``permanent = True``) ends the task
``refused`` on its first attempt with the reason, however many retries the task was allowed; a
malformed path in one item costs that item only and the task ends ``done``.

Depends on the worker's single retry rule treating any exception with ``permanent = True`` as a
refusal (worker/lifecycle); the loader side is tested on its own in tests/test_loaders_boundaries.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dao.task_documents import FineTuningRequest, TaskStatus
from dao.tasks import TasksDAO
from tests.fixtures.fine_tuning import clickstream_records, ingest_and_release, write_items
from worker.jobs import fine_tuning_job
from worker.lifecycle import run_task
from worker.settings import Settings


@pytest.fixture
def settings(mongo_server, mongo_db, mlflow_server, tmp_path) -> Settings:
    return Settings(mongo_url=mongo_server.url, mongo_db=mongo_db.name, mlflow_tracking_uri=mlflow_server.url,
                    chroma_path=str(tmp_path / "chroma"), heartbeat_seconds=0.3, lease_seconds=30, max_retries=2,
                    min_backoff_ms=100, max_backoff_ms=200)


@pytest.fixture
def world(tmp_path, mongo_db):
    items, records = clickstream_records()
    items_dir = write_items(tmp_path / "items", items)
    return items_dir, ingest_and_release(mongo_db, records)


def options(loader: dict, **extra) -> dict:
    return {"loader": loader, "max_evals": 1, "num_epochs": 1, "batch_size": 4, "max_steps": 4, "test_size": 0.25,
            "model_line": f"test-{uuid.uuid4().hex[:8]}", "settings": {"step_size": 50}, **extra}


def run_job(db, settings, **request):
    dao = TasksDAO.for_kind(db, "fine_tuning")
    task_id = dao.create(FineTuningRequest(**request), max_attempts=3).task.id
    status = run_task("fine_tuning", task_id, fine_tuning_job.run, settings=settings, db=db)
    return status, dao.get(task_id)


@pytest.fixture
def missing_table(pg_schema, monkeypatch) -> dict:
    from tests.fixtures.services import PG_DSN

    monkeypatch.setenv("CLICKTUNE_PG_DSN", PG_DSN)
    return {"source": "pg_text", "schema": pg_schema, "table": "no_such_table", "text_column": "body"}


@pytest.mark.parametrize("case", ["root outside the allow-list", "root is a file", "missing table"])
def test_a_permanent_loader_error_is_refused_on_the_first_attempt(mongo_db, settings, world, tiny_start_run, case, request):
    items_dir, batch_id = world
    loader = {
        "root outside the allow-list": {"source": "local_file", "root_dir": "/"},
        "root is a file": {"source": "local_file", "root_dir": str(items_dir / "d1.txt")},
    }.get(case) or request.getfixturevalue("missing_table")
    status, task = run_job(mongo_db, settings, embedding_model_id=f"run:{tiny_start_run}", batch_id=batch_id,
                           options=options(loader))
    assert status is TaskStatus.refused, (status, task.detail)
    assert task.attempt == 1
    expected = {"root outside the allow-list": "CLICKTUNE_LOADER_ALLOWED_ROOTS", "root is a file": "not a directory",
                "missing table": "no_such_table"}[case]
    assert expected in (task.detail or ""), task.detail


def test_a_nul_byte_in_one_item_path_costs_that_item_only(mongo_db, settings, world, tiny_start_run):
    items_dir, batch_id = world
    # the importer refuses a NUL in any string; this session was written by another writer
    changed = mongo_db.clickstream_sessions.update_many(
        {"search_results.object_id": "d3"}, {"$set": {"search_results.$.meta.path": "d3.txt\x00.png"}}
    )
    assert changed.modified_count > 0
    status, task = run_job(mongo_db, settings, embedding_model_id=f"run:{tiny_start_run}", batch_id=batch_id,
                           options=options({"source": "local_file", "root_dir": str(Path(items_dir))}))
    assert status is TaskStatus.done, task.detail
    assert task.attempt == 1 and task.result.items_missing >= 1 and task.result.items_total == 60
