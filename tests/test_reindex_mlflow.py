"""Reindex to a model that lives in MLflow (`run:<id>`), against a real `mlflow server` process:
the model is downloaded by run id, and after the switch the registry alias `blue` points at it."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from dao.blue_pointer import BluePointers
from dao.task_documents import ReindexRequest, TaskStatus
from dao.tasks import TasksDAO
from finetuning.experiments.model_logging import log_embeddings_model
from finetuning.models.registry import load_model
from tests.fixtures.reindex import make_docs
from worker.indexing import ItemRef, build_index
from worker.jobs import reindex_job
from worker.lifecycle import run_task
from worker.settings import Settings
from worker.vector_store import create_vector_store


@pytest.mark.slow
def test_reindex_to_an_mlflow_run_moves_the_blue_alias(mongo_server, mongo_db, mlflow_server, items_dir,
                                                       tiny_model_dirs, tmp_path):
    old_dir, new_dir = tiny_model_dirs
    settings = Settings(mongo_url=mongo_server.url, mongo_db=mongo_db.name, chroma_path=str(tmp_path / "chroma"),
                        mlflow_tracking_uri=mlflow_server.url, reindex_page_size=10, heartbeat_seconds=1)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment(f"reindex-test-{mongo_db.name}")
    run = client.create_run(experiment_id)
    logged = log_embeddings_model(load_model(new_dir), run_id=run.info.run_id, tracking_uri=mlflow_server.url)
    client.set_terminated(run.info.run_id)
    name = f"line-{mongo_db.name}"
    client.create_registered_model(name)
    version = client.create_model_version(name, logged.model_uri, run_id=run.info.run_id, model_id=logged.model_id)

    docs = make_docs(20)
    build_index(store=create_vector_store(settings), pointers=BluePointers(mongo_db), model=load_model(old_dir),
                model_ref=f"dir:{old_dir}", loader_config={"source": "local_file", "root_dir": str(items_dir)},
                items=[ItemRef(object_id=d, meta={"path": f"{d}.json"}) for d in docs])
    dao = TasksDAO.for_kind(mongo_db, "reindex")
    task_id = dao.create(ReindexRequest(dest_run_id=run.info.run_id)).task.id  # bare run id

    assert run_task("reindex", task_id, reindex_job.run, settings=settings, db=mongo_db) is TaskStatus.done

    task = dao.get(task_id)
    assert task.result["dest_model"] == f"run:{run.info.run_id}"
    assert task.result["registry_alias"] == {"name": name, "version": str(version.version), "alias": "blue"}
    assert client.get_model_version_by_alias(name, "blue").version == version.version
    pointer = BluePointers(mongo_db).get()
    assert pointer.model_ref == f"run:{run.info.run_id}" and pointer.item_count == 20
    doc = docs["doc004"]
    query = load_model(new_dir).encode_queries([f"{doc['title']}. {doc['text']}"])
    assert create_vector_store(settings).query(pointer.collection, query, k=1).ids == [["doc004"]]

    # an unknown run is bad input: refused, and blue stays where it is
    unknown = dao.create(ReindexRequest(dest_run_id="0" * 32)).task.id
    assert run_task("reindex", unknown, reindex_job.run, settings=settings, db=mongo_db) is TaskStatus.refused
    assert "cannot load model" in dao.get(unknown).detail
    assert BluePointers(mongo_db).get().collection == pointer.collection
