"""No secret in any output: a fine-tuning task run with a distinctive secret in every secret setting.

Real services that take (or ignore) the credentials: the nx-27017 wire server (PLAIN auth, accepted),
a Redis started here with ``--requirepass``, the MLflow server (basic-auth credentials in the URI,
ignored), PostgreSQL with trust auth (the DSN's password ignored; the items come from it through the
``pg_text`` loader), an AWS secret key the task never needs. A password is also put where the
request schema forbids it (the loader options). After the task, none of the secrets appears in the
worker's log, the CLI's output, any Mongo document, or MLflow's params, tags, model versions and
text artifacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dao.task_documents import TaskStatus
from tests.fixtures.fine_tuning import clickstream_records, ingest_and_release
from tests.fixtures.services import PG_DSN
from worker.local_services import free_port, start_process

pytestmark = pytest.mark.slow

SECRET_NAMES = ("mongo", "redis", "mlflow", "aws", "pg", "forbidden")


@pytest.fixture
def secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {name: f"Sekrit{name.capitalize()}{tag}" for name in SECRET_NAMES}


@pytest.fixture
def redis_with_password(secrets):
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", secrets["redis"],
           "--save", "", "--appendonly", "no"]
    with start_process("redis-auth", cmd, port, f"redis://:{secrets['redis']}@127.0.0.1:{port}/0") as server:
        yield server


@pytest.fixture
def pg_items(pg_schema):
    """The synthetic items in a PostgreSQL table ``<schema>.items(id, body)``."""
    import psycopg2
    from psycopg2 import sql

    items, records = clickstream_records(n_items=30, n_sessions=40, seed=31)
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {}.items (id text PRIMARY KEY, body text)").format(sql.Identifier(pg_schema)))
        for object_id, text in items.items():
            cur.execute(sql.SQL("INSERT INTO {}.items VALUES (%s, %s)").format(sql.Identifier(pg_schema)),
                        (object_id, text))
    conn.close()
    return pg_schema, records


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clicktune = Path(sys.executable).parent / "clicktune"
    return subprocess.run([str(clicktune), *args], env=env, capture_output=True, text=True, timeout=120)


def mlflow_texts(tracking_uri: str) -> list[str]:
    """Everything MLflow holds that a user can read as text: experiments, runs' params and tags,
    registered models and versions, and every small text artifact."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    texts: list[str] = []
    for experiment in client.search_experiments():
        texts.append(json.dumps({"name": experiment.name, "tags": experiment.tags}))
        for run in client.search_runs([experiment.experiment_id]):
            texts.append(json.dumps({"params": run.data.params, "tags": run.data.tags, "name": run.info.run_name}))
            texts.extend(_artifact_texts(client, run.info.run_id, None))
    for model in client.search_registered_models():
        texts.append(json.dumps({"name": model.name, "description": model.description, "tags": model.tags}))
        for version in client.search_model_versions(f"name = '{model.name}'"):
            texts.append(json.dumps({"description": version.description, "tags": version.tags,
                                     "source": version.source}))
    return texts


def _artifact_texts(client, run_id: str, path: str | None) -> list[str]:
    import mlflow.artifacts

    texts = []
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            texts.extend(_artifact_texts(client, run_id, info.path))
        elif (info.file_size or 0) < 2_000_000 and Path(info.path).suffix in ("", ".json", ".txt", ".yaml", ".yml",
                                                                               ".md", ".py", ".cfg", ".MLmodel"):
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=info.path,
                                                        tracking_uri=client._tracking_client.tracking_uri)
            texts.append(Path(local).read_text(errors="replace"))
    return texts


def test_no_secret_reaches_logs_cli_output_task_documents_or_mlflow(secrets, mongo_server, mongo_db, mongo_db_name,
                                                                    redis_with_password, mlflow_server, pg_items,
                                                                    worker_env, start_worker, tiny_start_run, tmp_path):
    schema, records = pg_items
    batch_id = ingest_and_release(mongo_db, records)
    mongo_url = (mongo_server.url.replace("mongodb://", f"mongodb://clicktune:{secrets['mongo']}@")
                 + "&authMechanism=PLAIN&authSource=admin")
    env = {
        "CLICKTUNE_MONGO_URL": mongo_url,
        "CLICKTUNE_REDIS_URL": redis_with_password.url,
        "CLICKTUNE_MLFLOW_TRACKING_URI": mlflow_server.url.replace("http://", f"http://ct-user:{secrets['mlflow']}@"),
        "CLICKTUNE_AWS_ACCESS_KEY_ID": "AKIATESTKEYID",
        "CLICKTUNE_AWS_SECRET_ACCESS_KEY": secrets["aws"],
        "CLICKTUNE_PG_DSN": f"{PG_DSN} password={secrets['pg']}",
        "CLICKTUNE_CHROMA_PATH": str(tmp_path / "chroma"),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }
    worker = start_worker(env, threads=1)
    cli_env = {**os.environ, **worker_env, **env}
    line = f"secrets-{uuid.uuid4().hex[:6]}"
    loader = {"source": "pg_text", "schema": schema, "table": "items", "text_column": "body"}
    outputs: list[str] = []

    refused = run_cli(cli_env, "enqueue", f"run:{tiny_start_run}", batch_id,
                      "--loader", json.dumps({**loader, "password": secrets["forbidden"]}))
    outputs.append(refused.stdout + refused.stderr)
    assert refused.returncode == 2 and "options.loader.pg_text.password" in refused.stderr, refused.stderr

    enqueued = run_cli(cli_env, "enqueue", f"run:{tiny_start_run}", batch_id, "--loader", json.dumps(loader),
                       "--max-evals", "1", "--max-steps", "2", "--batch-size", "4",
                       "--options", json.dumps({"model_line": line}))
    outputs.append(enqueued.stdout + enqueued.stderr)
    assert enqueued.returncode == 0, enqueued.stderr
    task_id = enqueued.stdout.strip()
    watched = run_cli(cli_env, "status", task_id, "--watch", "--interval", "1")
    outputs.append(watched.stdout + watched.stderr)
    for args in (("status", task_id), ("status", task_id, "--json"), ("tasks", "--json"), ("tasks", "--wide")):
        shown = run_cli(cli_env, *args)
        assert shown.returncode == 0, shown.stderr
        outputs.append(shown.stdout + shown.stderr)
    task = json.loads(outputs[-3])
    assert task["status"] == TaskStatus.done.value, task.get("detail")
    assert task["result"]["items_missing"] == 0

    worker.stop(timeout=15)
    sources = {
        "worker log": worker.log_path.read_text(errors="replace"),
        "CLI output": "\n".join(outputs),
        "Mongo documents": "\n".join(json.dumps(list(mongo_db[name].find()), default=str)
                                     for name in mongo_db.list_collection_names()),
        "MLflow": "\n".join(mlflow_texts(mlflow_server.url)),
    }
    assert task_id in sources["Mongo documents"] and line in sources["MLflow"]  # the places were searched
    leaks = [(name, where) for name, secret in secrets.items() for where, text in sources.items() if secret in text]
    assert leaks == []
