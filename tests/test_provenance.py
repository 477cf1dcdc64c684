"""Provenance and portable artefacts of a fine-tuning task, through the real lifecycle runner, a real
Mongo wire server and a real ``mlflow server``: the run's name, tags, dataset input and per-step curves;
the registered version's description; the model card; and the registered model loaded in a fresh
process that never imports clicktune, embedding as the worker's copy does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from dao.task_documents import FineTuningRequest, TaskStatus
from dao.tasks import TasksDAO
from finetuning.model_ref import ModelRef
from tests.fixtures.fine_tuning import clickstream_records, ingest_and_release, write_items
from worker.jobs import fine_tuning_job
from worker.lifecycle import run_task
from worker.settings import Settings

TEXTS = ["red cat", "blue car news", "music and sport"]

FRESH_PROCESS = """
import json, sys
import mlflow, mlflow.sentence_transformers, mlflow.pyfunc, pandas as pd
uri, tracking, two_tower_uri = sys.argv[1], sys.argv[2], sys.argv[4]
mlflow.set_tracking_uri(tracking)
model = mlflow.sentence_transformers.load_model(uri)
texts = json.loads(sys.argv[3])
out = {"flavour": model.encode(texts, convert_to_numpy=True).tolist(),
       "pyfunc": mlflow.pyfunc.load_model(uri).predict(texts).tolist()}
out["leaked"] = sorted(m for m in sys.modules if m.split(".")[0] in ("finetuning", "worker", "dao", "loaders"))
# a model that is not one sentence-transformers tower: the pyfunc wrapper with the code it ships
wrapper = mlflow.pyfunc.load_model(two_tower_uri)
frame = pd.DataFrame({"text": texts})
out.update({tower: wrapper.predict(frame, params={"tower": tower}).tolist() for tower in ("query", "items")})
import finetuning
out["finetuning_from"] = finetuning.__file__
print(json.dumps(out))
"""


@pytest.fixture
def finished_task(mongo_db, mongo_server, mlflow_server, tiny_start_run, tmp_path):
    items, records = clickstream_records(seed=5)
    items_dir = write_items(tmp_path / "items", items)
    (items_dir / "d7.txt").unlink()  # one missing item, counted in the data summary
    batch_id = ingest_and_release(mongo_db, records)
    settings = Settings(mongo_url=mongo_server.url, mongo_db=mongo_db.name, mlflow_tracking_uri=mlflow_server.url,
                        chroma_path=str(tmp_path / "chroma"), heartbeat_seconds=0.3, lease_seconds=30, max_retries=0)
    options = {"loader": {"source": "local_file", "root_dir": str(items_dir)}, "max_evals": 1, "num_epochs": 2,
               "batch_size": 4, "max_steps": 8, "test_size": 0.25, "model_line": f"prov-{uuid.uuid4().hex[:8]}",
               "settings": {"step_size": 50, "test_each_n_sessions": 16}}
    dao = TasksDAO.for_kind(mongo_db, "fine_tuning")
    task_id = dao.create(FineTuningRequest(embedding_model_id=tiny_start_run, batch_id=batch_id, options=options),
                         max_attempts=1).task.id
    status = run_task("fine_tuning", task_id, fine_tuning_job.run, settings=settings, db=mongo_db)
    task = dao.get(task_id)
    assert status is TaskStatus.done, task.detail
    return task, batch_id, MlflowClient(tracking_uri=mlflow_server.url)


def test_fine_tuning_task_records_provenance_and_logs_a_portable_model(finished_task, mlflow_server,
                                                                      tiny_two_tower_dir, tmp_path):
    task, batch_id, client = finished_task
    check_run_page_and_version(task, batch_id, client)
    check_portable_model(task, client, mlflow_server.url, tiny_two_tower_dir, tmp_path)


def check_run_page_and_version(task, batch_id: str, client: MlflowClient) -> None:
    result = task.result
    run = client.get_run(result.best_run_id)
    tags = run.data.tags

    # named and tagged by the task that made it
    assert run.info.run_name == f"t{task.id[:8]}-trial1"
    assert tags["clicktune.task_id"] == task.id and tags["clicktune.task_kind"] == "fine_tuning"
    assert tags["clicktune.model_line"] == result.model_line and tags["clicktune.batch_id"] == batch_id
    assert tags["clicktune.trial"] == "1" and tags["clicktune.attempt"] == "1"
    assert tags["clicktune.items_source"].startswith("local_file root_dir=")
    assert tags["clicktune.items_count"] == "59" and len(tags["clicktune.items_digest"]) == 64
    assert task.id in tags["mlflow.note.content"]

    # the batch as a dataset input, with its digest and counts
    [dataset_input] = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == f"clickstream-{batch_id}" and dataset.source_type == "clicktune_clickstream"
    assert json.loads(dataset.source)["batch_id"] == batch_id
    assert tags["clicktune.data_digest"].startswith(dataset.digest)
    profile = json.loads(dataset.profile)
    assert profile["sessions"] == 160 and profile["items_total"] == 60 and profile["items_missing"] == 1
    assert profile["items_loaded"] == 59 and profile["clicks"] > 0 and profile["queries"] > 1
    assert profile["train_sessions"] + profile["held_out_sessions"] == profile["sessions_used"] == result.sessions_used
    assert [t.value for t in dataset_input.tags if t.key == "mlflow.data.context"] == ["train"]

    # curves: one point per optimizer step, validation at several steps
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(steps) >= 4 and steps == list(range(1, len(steps) + 1))
    lr = client.get_metric_history(run.info.run_id, "lr")
    assert [m.step for m in lr] == steps and lr[0].value > lr[-1].value > 0  # linear decay
    ndcg_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_ndcg_at_10")]
    assert ndcg_steps[0] == 0 and len(set(ndcg_steps)) >= 3

    # the registered version says what it is and how much better
    version = client.get_model_version(result.registered_model_name, result.registered_model_version)
    description = version.description
    main = result.main_metric
    assert f"{result.metrics_before[main]:.4f} → {result.metrics_after[main]:.4f}" in description
    gate = "passed" if result.quality_gate_passed else "not passed"
    assert f"Quality gate: **{gate}**" in description and task.id in description
    assert result.gate.reason in description and f"{result.gate.n_queries} held-out queries" in description
    assert tags["clicktune.data_digest"] in description
    assert version.tags["clicktune.gate_passed"] == str(result.quality_gate_passed).lower()
    assert version.tags["clicktune.task_id"] == task.id
    assert version.tags["clicktune.data_digest"] == tags["clicktune.data_digest"]


def check_portable_model(task, client: MlflowClient, tracking_uri: str, two_tower_dir: Path, tmp_path: Path) -> None:
    """The registered model (one tower: the sentence-transformers flavour) and a two-tower model (the
    pyfunc wrapper, which ships the modules it imports) load in a process that cannot import clicktune's
    code and embed as the worker's copies do."""
    from finetuning.experiments.model_logging import log_embeddings_model
    from finetuning.models.registry import load_model

    uri = task.result.best_model_uri
    two_tower = load_model(two_tower_dir)
    two_tower_uri = log_embeddings_model(two_tower, client, run_id=task.result.best_run_id, name="two-towers",
                                         card="# two towers\n").model_uri

    # the sentence-transformers flavour, requirements installable from PyPI, a model card
    import mlflow

    from finetuning.experiments.model_logging import use_tracking_uri

    with use_tracking_uri(tracking_uri):
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "dl")))
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "sentence_transformers:" in mlmodel and "loader_module: mlflow.sentence_transformers" in mlmodel
    requirements = (model_dir / "requirements.txt").read_text().splitlines()
    assert not any(r.startswith("clicktune") for r in requirements)
    from packaging.requirements import Requirement

    parsed = {Requirement(r).name: Requirement(r) for r in requirements}
    assert set(parsed) >= {"mlflow", "sentence-transformers", "torch", "transformers"}
    assert all(r.specifier and not r.url for r in parsed.values())
    card = (model_dir / "model.sentence_transformer" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers")
    for expected in ("start model: `run:",
                     "sessions", "click model: `click_relevance`", "loss: `click_infonce`", "`query_lr`",
                     "| val_ndcg@10 |", "Quality gate:", task.id):
        assert expected in card, expected

    # a fresh process with neither clicktune on its path nor its modules imported
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-I", "-c", FRESH_PROCESS, uri, tracking_uri, json.dumps(TEXTS), two_tower_uri],
                         capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh["leaked"] == []

    worker_copy = ModelRef.parse(uri).load(tracking_uri)
    expected = worker_copy.encode_queries(TEXTS).detach().cpu().numpy()
    np.testing.assert_allclose(np.array(fresh["flavour"]), expected, atol=1e-5)
    np.testing.assert_allclose(np.array(fresh["pyfunc"]), expected, atol=1e-5)
    assert "/code/finetuning/" in fresh["finetuning_from"]  # the copy shipped with the wrapper model
    np.testing.assert_allclose(np.array(fresh["query"]), two_tower.encode_queries(TEXTS).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.array(fresh["items"]), two_tower.encode_items(TEXTS).numpy(), atol=1e-5)

