"""Reindex through separate processes: `clicktune index` / `clicktune reindex` / `clicktune blue`
CLI processes and a real `clicktune worker` process, on the Mongo wire server, Redis and an
embedded Chroma directory shared by the processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dao.blue_pointer import BluePointers
from dao.locks import LeaseLocks, model_lock_name
from dao.task_documents import TaskStatus
from finetuning.models.registry import load_model
from tests.fixtures.reindex import make_docs
from worker.vector_store import ChromaVectorStore

REPO = Path(__file__).resolve().parents[1]
CLICKTUNE = str(Path(sys.executable).parent / "clicktune")


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    done = subprocess.run([CLICKTUNE, *args], env=full_env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert done.returncode == 0, f"clicktune {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_reindex_waits_for_a_locked_model_then_switches_blue(worker_env, start_worker, clicktune_client, mongo_db,
                                                             items_dir, tiny_model_dirs, tmp_path):
    old_dir, new_dir = tiny_model_dirs
    env = {**worker_env, "CLICKTUNE_CHROMA_PATH": str(tmp_path / "chroma"), "CLICKTUNE_REINDEX_PAGE_SIZE": "8",
           "CLICKTUNE_REINDEX_CONFLICT_DELAY_MS": "700", "CLICKTUNE_MODEL_LOCK_LEASE_SECONDS": "6"}
    items_config = {"loader": {"source": "local_file", "root_dir": str(items_dir)}, "scan_directory": True}
    _cli(env, "index", "--model", f"dir:{old_dir}", "--items-config", json.dumps(items_config))
    first = BluePointers(mongo_db).get()
    assert first.item_count == 30 and first.model_ref == f"dir:{old_dir}"

    # someone else holds the new model: the task must wait, not fail and not be refused
    locks = LeaseLocks(mongo_db)
    assert locks.acquire(model_lock_name(f"dir:{new_dir}"), "reindex:other-task", 120)
    start_worker(env)
    task_id = _cli(env, "reindex", "--from", f"dir:{old_dir}", "--to", f"dir:{new_dir}", "--wait-on-conflict").strip()

    deadline = time.monotonic() + 60
    waited = None
    while time.monotonic() < deadline:
        task = clicktune_client.status(task_id, "reindex")
        if task.detail and "waiting" in task.detail:
            waited = task
            break
        assert not task.terminal, task
        time.sleep(0.1)
    assert waited is not None, "the task never reported waiting for the lock"
    assert "reindex:other-task" in waited.detail
    time.sleep(2)  # several deferral rounds (700 ms each) while the lock is held
    task = clicktune_client.status(task_id, "reindex")
    assert not task.terminal and task.attempt <= 1  # waiting does not use up attempts
    assert BluePointers(mongo_db).get().collection == first.collection

    assert locks.release(model_lock_name(f"dir:{new_dir}"), "reindex:other-task")
    task = clicktune_client.wait(task_id, timeout=180, kind="reindex")
    assert task.status is TaskStatus.done, task.detail
    assert task.attempt == 1

    shown = json.loads(_cli(env, "blue", "--json", "--name", "default"))
    assert shown["collection"] == task.result["collection"] != first.collection
    assert shown["model_ref"] == f"dir:{new_dir}"
    assert shown["items_in_store"] == 30 and shown["version"] == 2

    store = ChromaVectorStore.persistent(tmp_path / "chroma")
    assert store.list_collections() == [shown["collection"]]
    doc = make_docs(30)["doc021"]
    query = load_model(new_dir).encode_queries([f"{doc['title']}. {doc['text']}"])
    assert store.query(shown["collection"], query, k=1).ids == [["doc021"]]
    assert locks.holder(model_lock_name(f"dir:{new_dir}")) is None


@pytest.mark.slow
def test_worker_killed_mid_reindex_recovers_and_leaves_no_half_built_collection(
        worker_env, start_worker, clicktune_client, mongo_db, tiny_model_dirs, tmp_path):
    from tests.fixtures.reindex import write_docs

    old_dir, new_dir = tiny_model_dirs
    items = write_docs(tmp_path / "items", make_docs(150))
    env = {**worker_env, "CLICKTUNE_CHROMA_PATH": str(tmp_path / "chroma"), "CLICKTUNE_REINDEX_PAGE_SIZE": "3",
           "CLICKTUNE_MODEL_LOCK_LEASE_SECONDS": "3"}
    items_config = {"loader": {"source": "local_file", "root_dir": str(items)}, "scan_directory": True}
    _cli(env, "index", "--model", f"dir:{old_dir}", "--items-config", json.dumps(items_config))
    first = BluePointers(mongo_db).get()

    worker = start_worker(env)
    task_id = clicktune_client.enqueue_reindex({"dest_run_id": f"dir:{new_dir}"})
    deadline = time.monotonic() + 120
    while True:
        task = clicktune_client.status(task_id, "reindex")
        if (task.progress.model_extra or {}).get("items_done", 0) > 0:
            break
        assert not task.terminal and time.monotonic() < deadline, task
        time.sleep(0.05)
    worker.kill()  # SIGKILL mid-build: no cleanup code runs, locks and lease stay behind
    store = ChromaVectorStore.persistent(tmp_path / "chroma")
    assert len(store.list_collections()) == 2  # the blue one and the half-built one
    assert BluePointers(mongo_db).get().collection == first.collection

    start_worker(env)  # the lease expires, the task is taken back and retried; the locks expire too
    task = clicktune_client.wait(task_id, timeout=180, kind="reindex")
    assert task.status is TaskStatus.done, task.detail
    assert task.attempt == 2
    pointer = BluePointers(mongo_db).get()
    assert pointer.collection == task.result["collection"] and pointer.item_count == 150
    assert store.list_collections() == [pointer.collection]  # old dropped, leftover of attempt 1 dropped
    assert store.count(pointer.collection) == 150
