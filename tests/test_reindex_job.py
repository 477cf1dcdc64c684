"""The reindex job through the real lifecycle runner (``run_task``), in-process.

Real Mongo wire server, embedded Chroma in a temp dir, tiny models on disk, the local-file loader
(and the PostgreSQL loader for a source that breaks mid-way). The run through a separate
``clicktune worker`` process is in tests/test_reindex_worker.py.
"""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import psycopg2
import pytest
from psycopg2 import sql

from dao.blue_pointer import BluePointers
from dao.locks import LeaseLocks, model_lock_name
from dao.task_documents import ReindexRequest, TaskStatus
from dao.tasks import TasksDAO
from finetuning.models.registry import load_model
from tests.fixtures.reindex import make_docs
from tests.fixtures.services import PG_DSN
from worker import indexing
from worker.indexing import ITEM_META_KEY, ItemRef, build_index
from worker.jobs import reindex_job
from worker.lifecycle import run_task
from worker.settings import Settings
from worker.vector_store import create_vector_store


@pytest.fixture
def settings(mongo_server, mongo_db, tmp_path) -> Settings:
    return Settings(mongo_url=mongo_server.url, mongo_db=mongo_db.name, chroma_path=str(tmp_path / "chroma"),
                    reindex_page_size=7, mlflow_tracking_uri="", lease_seconds=30, heartbeat_seconds=1)


def _local_loader(items_dir) -> dict:
    return {"source": "local_file", "root_dir": str(items_dir)}


def _index(settings, db, model_dir, loader, refs, name="default"):
    store = create_vector_store(settings)
    return build_index(store=store, pointers=BluePointers(db), model=load_model(model_dir),
                       model_ref=f"dir:{model_dir}", loader_config=loader, items=refs, pointer_name=name, page_size=8)


def _file_refs(docs) -> list[ItemRef]:
    return [ItemRef(object_id=doc_id, meta={"path": f"{doc_id}.json"}) for doc_id in docs]


def _create(db, max_attempts=1, **request) -> str:
    return TasksDAO.for_kind(db, "reindex").create(ReindexRequest(**request), max_attempts=max_attempts).task.id


def _run(settings, db, task_id):
    return run_task("reindex", task_id, reindex_job.run, settings=settings, db=db)


def test_reindex_switches_blue_to_a_complete_collection_embedded_by_the_new_model(settings, mongo_db, items_dir,
                                                                                  tiny_model_dirs):
    old_dir, new_dir = tiny_model_dirs
    docs = make_docs(30)
    first = _index(settings, mongo_db, old_dir, _local_loader(items_dir), _file_refs(docs))
    task_id = _create(mongo_db, source_run_id=f"dir:{old_dir}", dest_run_id=f"dir:{new_dir}", parent_id="ft-1")

    assert _run(settings, mongo_db, task_id) is TaskStatus.done

    task = TasksDAO.for_kind(mongo_db, "reindex").get(task_id)
    result = task.result
    pointer = BluePointers(mongo_db).get()
    assert pointer.collection == result["collection"] != first.collection
    assert pointer.model_ref == f"dir:{new_dir}" and pointer.version == 2 and pointer.item_count == 30
    assert pointer.previous_collection == first.collection and pointer.reindex_task_id == task_id
    assert result["old_collection_dropped"] is True
    assert task.progress.stage == "dropping old collection" and task.progress.model_extra["items_done"] == 30

    store = create_vector_store(settings)
    assert store.list_collections() == [pointer.collection]  # old dropped, nothing half-built left
    assert store.count(pointer.collection) == 30
    # every item kept its loader meta
    metas = {i: m for page in store.iter_items(pointer.collection, 100) for i, m in zip(*page)}
    assert json.loads(metas["doc007"][ITEM_META_KEY]) == {"path": "doc007.json"}
    # a query embedded with the NEW model finds the right document at distance ~0; with the old
    # model's embedding of the same text it does not (the collection really holds new embeddings)
    new_model, old_model = load_model(new_dir), load_model(old_dir)
    text = f"{docs['doc013']['title']}. {docs['doc013']['text']}"
    hit = store.query(pointer.collection, new_model.encode_queries([text]), k=3)
    assert hit.ids[0][0] == "doc013" and hit.distances[0][0] < 1e-4
    stale = store.query(pointer.collection, old_model.encode_queries([text]), k=1)
    assert stale.distances[0][0] > 1e-3


def test_missing_item_fails_at_once_and_leaves_blue_intact(settings, mongo_db, items_dir, tiny_model_dirs):
    old_dir, new_dir = tiny_model_dirs
    docs = make_docs(30)
    first = _index(settings, mongo_db, old_dir, _local_loader(items_dir), _file_refs(docs))
    # the items directory loses a file that sits on a later page: pages before it are written first
    pages = [p.ids for p in create_vector_store(settings).iter_items(first.collection, settings.reindex_page_size)]
    lost = pages[2][3]
    (items_dir / f"{lost}.json").unlink()
    task_id = _create(mongo_db, max_attempts=3, dest_run_id=f"dir:{new_dir}")

    assert _run(settings, mongo_db, task_id) is TaskStatus.failed  # TaskFailed: at once, no retries

    task = TasksDAO.for_kind(mongo_db, "reindex").get(task_id)
    assert task.status is TaskStatus.failed and task.attempt == 1  # permanent: no retry
    assert lost in task.detail and "blue unchanged" in task.detail
    assert task.progress.model_extra["items_done"] == 2 * settings.reindex_page_size  # it failed mid-way
    pointer = BluePointers(mongo_db).get()
    assert (pointer.collection, pointer.version, pointer.model_ref) == (first.collection, 1, f"dir:{old_dir}")
    store = create_vector_store(settings)
    assert store.list_collections() == [first.collection]  # the half-built collection is gone
    assert store.count(first.collection) == 30
    assert LeaseLocks(mongo_db).holder(model_lock_name(f"dir:{new_dir}")) is None  # locks released


def test_loader_that_raises_mid_way_leaves_blue_intact(settings, mongo_db, pg_schema, tiny_model_dirs, monkeypatch):
    old_dir, new_dir = tiny_model_dirs
    monkeypatch.setenv("CLICKTUNE_PG_DSN", PG_DSN)
    docs = make_docs(30)
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        table = sql.Identifier(pg_schema, "items")
        cur.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, body text)").format(table))
        for doc_id, doc in docs.items():
            cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (doc_id, doc["text"]))
    loader = {"source": "pg_text", "schema": pg_schema, "table": "items", "text_column": "body"}
    first = _index(settings, mongo_db, old_dir, loader, [ItemRef(object_id=d) for d in docs])
    assert create_vector_store(settings).count(first.collection) == 30

    # the source breaks while the reindex runs: after the second page the table is gone
    original = indexing.embed_page
    pages_seen = []

    def embed_then_break(*args, **kwargs):
        pages_seen.append(1)
        if len(pages_seen) == 3:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(pg_schema, "items")))
        return original(*args, **kwargs)

    monkeypatch.setattr(indexing, "embed_page", embed_then_break)
    # a missing table is a permanent source error: refused at once, with the reason, not retried
    task_id = _create(mongo_db, max_attempts=3, dest_run_id=f"dir:{new_dir}")
    assert _run(settings, mongo_db, task_id) is TaskStatus.refused
    conn.close()

    task = TasksDAO.for_kind(mongo_db, "reindex").get(task_id)
    assert task.status is TaskStatus.refused and task.attempt == 1
    assert "items" in task.detail and "does not exist" in task.detail
    pointer = BluePointers(mongo_db).get()
    assert pointer.collection == first.collection and pointer.version == 1
    store = create_vector_store(settings)
    assert store.list_collections() == [first.collection]
    assert store.count(first.collection) == 30


def test_lock_conflict_is_refused_without_wait(settings, mongo_db, items_dir, tiny_model_dirs):
    old_dir, new_dir = tiny_model_dirs
    _index(settings, mongo_db, old_dir, _local_loader(items_dir), _file_refs(make_docs(30)))
    LeaseLocks(mongo_db).acquire(model_lock_name(f"dir:{new_dir}"), "reindex:someone-else", 60)
    task_id = _create(mongo_db, dest_run_id=f"dir:{new_dir}")

    assert _run(settings, mongo_db, task_id) is TaskStatus.refused

    task = TasksDAO.for_kind(mongo_db, "reindex").get(task_id)
    assert "locked by reindex:someone-else" in task.detail and "wait_on_conflict" in task.detail
    assert BluePointers(mongo_db).get().version == 1
    assert len(create_vector_store(settings).list_collections()) == 1


def test_an_expired_lock_of_a_crashed_reindex_does_not_block(settings, mongo_db, items_dir, tiny_model_dirs):
    old_dir, new_dir = tiny_model_dirs
    _index(settings, mongo_db, old_dir, _local_loader(items_dir), _file_refs(make_docs(30)))
    LeaseLocks(mongo_db).acquire(model_lock_name(f"dir:{new_dir}"), "reindex:crashed", 0.2)
    import time

    time.sleep(0.3)
    task_id = _create(mongo_db, dest_run_id=f"dir:{new_dir}")
    assert _run(settings, mongo_db, task_id) is TaskStatus.done


@pytest.mark.parametrize("request_fields, needle", [
    ({"dest_run_id": "nonsense"}, "unrecognised model reference"),
    ({"dest_run_id": "dir:/does/not/exist"}, "cannot load model"),
    ({"source_run_id": "base:all-MiniLM-L6-v2", "dest_run_id": "dir:/x"}, "not blue in any deployment"),
    ({"source": "no-such-collection", "dest_run_id": "dir:/x"}, "not the blue collection"),
])
def test_unusable_requests_are_refused(settings, mongo_db, items_dir, tiny_model_dirs, request_fields, needle):
    old_dir, _ = tiny_model_dirs
    first = _index(settings, mongo_db, old_dir, _local_loader(items_dir), _file_refs(make_docs(10)))
    task_id = _create(mongo_db, **request_fields)
    assert _run(settings, mongo_db, task_id) is TaskStatus.refused
    assert needle in TasksDAO.for_kind(mongo_db, "reindex").get(task_id).detail
    assert create_vector_store(settings).list_collections() == [first.collection]


def test_no_deployment_yet_is_refused(settings, mongo_db, tiny_model_dirs):
    task_id = _create(mongo_db, dest_run_id=f"dir:{tiny_model_dirs[1]}")
    assert _run(settings, mongo_db, task_id) is TaskStatus.refused
    assert "clicktune index" in TasksDAO.for_kind(mongo_db, "reindex").get(task_id).detail


def test_cancel_during_reindex_keeps_blue(settings, mongo_db, items_dir, tiny_model_dirs, monkeypatch):
    old_dir, new_dir = tiny_model_dirs
    first = _index(settings, mongo_db, old_dir, _local_loader(items_dir), _file_refs(make_docs(30)))
    task_id = _create(mongo_db, dest_run_id=f"dir:{new_dir}")
    original = indexing.embed_page
    calls = []

    def embed_and_cancel(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            TasksDAO.for_kind(mongo_db, "reindex").request_cancel(task_id)
            import time

            time.sleep(settings.heartbeat_seconds * 2.5)  # the heartbeat relays the cancel
        return original(*args, **kwargs)

    monkeypatch.setattr(indexing, "embed_page", embed_and_cancel)
    assert _run(settings, mongo_db, task_id) is TaskStatus.canceled
    assert BluePointers(mongo_db).get().collection == first.collection
    assert create_vector_store(settings).list_collections() == [first.collection]


def test_build_index_replaces_a_previous_blue_with_cas(settings, mongo_db, items_dir, tiny_model_dirs):
    old_dir, new_dir = tiny_model_dirs
    refs = _file_refs(make_docs(12))
    first = _index(settings, mongo_db, old_dir, _local_loader(items_dir), refs)
    second = _index(settings, mongo_db, new_dir, _local_loader(items_dir), refs)
    assert second.previous_collection == first.collection and second.old_collection_dropped
    store = create_vector_store(settings)
    assert store.list_collections() == [second.collection]
    assert store.count(second.collection) == 12
    vectors = load_model(new_dir).encode_items(["x"])
    assert np.asarray(vectors).shape == (1, 32)


def test_leftover_of_a_killed_attempt_is_dropped(settings, mongo_db, items_dir, tiny_model_dirs):
    old_dir, new_dir = tiny_model_dirs
    first = _index(settings, mongo_db, old_dir, _local_loader(items_dir), _file_refs(make_docs(10)))
    task_id = _create(mongo_db, dest_run_id=f"dir:{new_dir}")
    store = create_vector_store(settings)
    # what a worker killed mid-build leaves behind, plus an unrelated collection that must survive
    store.create_collection("default-new-deadbeef", {reindex_job.COLLECTION_TASK_KEY: task_id})
    store.create_collection("someone-elses", {reindex_job.COLLECTION_TASK_KEY: "another-task"})

    assert _run(settings, mongo_db, task_id) is TaskStatus.done

    blue = BluePointers(mongo_db).get().collection
    assert sorted(store.list_collections()) == sorted([blue, "someone-elses"])
    assert first.collection not in store.list_collections()


def test_cancel_inside_a_page_is_seen_between_encoding_batches(settings, mongo_db, items_dir, tiny_model_dirs,
                                                                 monkeypatch):
    old_dir, new_dir = tiny_model_dirs
    first = _index(settings, mongo_db, old_dir, _local_loader(items_dir), _file_refs(make_docs(30)))
    settings = settings.model_copy(update={"reindex_page_size": 30})  # one page of 30: no page boundary
    task_id = _create(mongo_db, dest_run_id=f"dir:{new_dir}")
    original_load = reindex_job._load_model
    batches = []

    def load_counting(*args):
        model = original_load(*args)
        encode = model.encode_items

        def encode_and_cancel(items, batch_size=64):
            batches.append(len(items))
            if len(batches) == 1:
                TasksDAO.for_kind(mongo_db, "reindex").request_cancel(task_id)
                time.sleep(settings.heartbeat_seconds * 2.5)  # the heartbeat relays the cancel
            return encode(items, batch_size=batch_size)

        model.encode_items = encode_and_cancel
        return model

    monkeypatch.setattr(reindex_job, "_load_model", load_counting)
    monkeypatch.setattr(indexing, "embed_page", functools.partial(indexing.embed_page, batch_size=8))
    assert _run(settings, mongo_db, task_id) is TaskStatus.canceled
    assert batches == [8]  # the page's other three batches were never encoded
    assert BluePointers(mongo_db).get().collection == first.collection
    assert create_vector_store(settings).list_collections() == [first.collection]
