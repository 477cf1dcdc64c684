"""The HTTP API as a real ``clicktune api`` (uvicorn) process, against nx-27017, the machine's Redis,
a Chroma server, an MLflow server and a real ``clicktune worker``.

- a search service's whole round trip over HTTP: sessions and events in (good and bad, single and
  bulk, replays), release, a fine-tuning task of a tiny model watched to ``done``, a reindex to its
  best run, and searches that follow blue from the old model to the new one;
- ``/metrics`` of the API (requests, ingest counters, tasks by status, training steps, blue age) and
  of the worker (Dramatiq's Prometheus middleware), and the worker's consumption heartbeat;
- API keys: 401 without or with an unknown key, 403 with the wrong scope, keys from settings and
  from the ``api_keys`` collection, and no key in the service log or any Mongo document;
- request bodies over the limit → 413; ``clicktune api --openapi`` prints the spec and starts nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dao.blue_pointer import BluePointers
from tests.fixtures.fine_tuning import clickstream_records, write_items
from tests.polling import wait_for
from worker.api.auth import hash_key, store_key
from finetuning.model_ref import ModelRef
from worker.indexing import ItemRef, build_index
from worker.local_services import LocalProcess, free_port, start_process
from worker.monitoring import heartbeat_key_prefix
from worker.vector_store import create_vector_store

REPO = Path(__file__).resolve().parents[1]
CLICKTUNE = str(Path(sys.executable).parent / "clicktune")


def _live(handle: LocalProcess) -> bool:
    try:
        with urllib.request.urlopen(f"{handle.url}/v1/health/live", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_api(env: dict[str, str]) -> LocalProcess:
    port = free_port()
    cmd = [CLICKTUNE, "api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    full_env = {**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return start_process("api", cmd, port, f"http://127.0.0.1:{port}", env=full_env, ready_timeout=90,
                         workdir=REPO, ready_check=_live)


class Keys:
    """Fresh random keys per test, configured in CLICKTUNE_API_KEYS by hash only."""

    def __init__(self) -> None:
        self.admin = f"adm-{uuid.uuid4().hex}"
        self.ingest = f"ing-{uuid.uuid4().hex}"
        self.tasks = f"tsk-{uuid.uuid4().hex}"
        self.search = f"sea-{uuid.uuid4().hex}"

    def env(self) -> str:
        entries = [("admin", self.admin, ["admin"]), ("ingester", self.ingest, ["ingest"]),
                   ("tasker", self.tasks, ["tasks"]), ("frontend", self.search, ["search"])]
        return json.dumps([{"name": n, "sha256": hash_key(k), "scopes": s} for n, k, s in entries])

    def all(self) -> list[str]:
        return [self.admin, self.ingest, self.tasks, self.search]


def metrics(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _all_documents_text(db) -> str:
    return "\n".join(json.dumps(doc, default=str) for name in db.list_collection_names() for doc in db[name].find({}))


@pytest.fixture
def api_env(worker_env) -> tuple[dict[str, str], Keys]:
    keys = Keys()
    return {**worker_env, "CLICKTUNE_API_KEYS": keys.env(), "CLICKTUNE_API_MAX_BODY_BYTES": "400000"}, keys


def test_api_keys_scopes_and_no_key_in_logs_or_documents(api_env, mongo_db, clicktune_client):
    env, keys = api_env
    stored_key = f"stored-{uuid.uuid4().hex}"
    store_key(mongo_db, "stored-ingester", ["ingest"], stored_key)
    api = start_api(env)
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            missing = http.get("/v1/clickstream/batches")
            assert missing.status_code == 401
            assert missing.json()["error"] == "unauthorized" and "X-API-Key" in missing.json()["message"]
            wrong = http.get("/v1/clickstream/batches", headers={"X-API-Key": "not-a-key"})
            assert wrong.status_code == 401 and "invalid API key" in wrong.json()["message"]
            scoped = http.post("/v1/search", json={"query": "x"}, headers={"X-API-Key": keys.ingest})
            assert scoped.status_code == 403
            assert scoped.json()["message"] == "API key 'ingester' lacks scope 'search' (it has: ingest)"
            assert http.get("/v1/tasks", headers={"X-API-Key": keys.search}).status_code == 403
            assert http.get("/v1/clickstream/batches", headers={"X-API-Key": keys.tasks}).status_code == 403
            assert http.get("/v1/tasks", headers={"X-API-Key": keys.tasks}).status_code == 200
            assert http.get("/v1/clickstream/batches", headers={"X-API-Key": keys.admin}).status_code == 200
            assert http.get("/v1/clickstream/batches", headers={"X-API-Key": stored_key}).status_code == 200
            assert http.get("/v1/tasks", headers={"X-API-Key": stored_key}).status_code == 403
            assert http.get("/v1/health/live").json() == {"status": "ok"}
            ready = http.get("/v1/health/ready")
            assert ready.status_code == 200 and ready.json()["checks"]["mongo"] == "ok"
            # a body over the limit is refused before it is read, as JSON
            big = http.post("/v1/clickstream/records/bulk", headers={"X-API-Key": keys.admin},
                            content=b'{"records": [' + b'"x",' * 200_000 + b'"x"]}')
            assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
            # keys in query strings are not keys (and must not be logged either)
            assert http.get("/v1/tasks", params={"api_key": keys.admin}).status_code == 401
            bad_json = http.post("/v1/clickstream/release", headers={"X-API-Key": keys.admin,
                                                                      "Content-Type": "application/json"}, content=b"{")
            assert bad_json.status_code == 422 and bad_json.json()["error"] == "invalid_request"
    finally:
        api.stop()
    log = api.log_tail(1_000_000)
    assert "GET /v1/tasks" in log  # the access log is on …
    for key in [*keys.all(), stored_key]:
        assert key not in log  # … and never shows a key
    documents = _all_documents_text(mongo_db)
    assert hash_key(stored_key) in documents
    for key in [*keys.all(), stored_key]:
        assert key not in documents


def test_openapi_is_printed_without_starting_anything():
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLICKTUNE_MONGO_URL": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200",
           "CLICKTUNE_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([CLICKTUNE, "api", "--openapi"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)
    assert spec["openapi"].startswith("3.")
    assert {"/v1/clickstream/sessions", "/v1/clickstream/records/bulk", "/v1/clickstream/release",
            "/v1/tasks/fine-tuning", "/v1/tasks/{task_id}/restart", "/v1/tasks/reindex", "/v1/blue",
            "/v1/search", "/v1/schedule", "/v1/health/ready"} <= set(spec["paths"])
    assert all(path.startswith("/v1/") for path in spec["paths"])
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


@pytest.mark.slow
def test_a_search_service_round_trip_over_http(api_env, start_worker, clicktune_client, mongo_db, worker_settings,
                                               mlflow_server, chroma_server, tiny_start_run, tmp_path):
    env, keys = api_env
    worker_port = free_port()
    env = {**env, "CLICKTUNE_MLFLOW_TRACKING_URI": mlflow_server.url, "CLICKTUNE_CHROMA_HOST": "127.0.0.1",
           "CLICKTUNE_CHROMA_PORT": str(chroma_server.extra["port"]), "CLICKTUNE_WORKER_HEARTBEAT_S": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    settings = worker_settings.model_copy(update={"mlflow_tracking_uri": mlflow_server.url, "chroma_host": "127.0.0.1",
                                                  "chroma_port": chroma_server.extra["port"]})
    # the deployment exists: items on disk, the first blue index built with the start model
    items, records = clickstream_records(seed=3)
    items_dir = write_items(tmp_path / "items", items)
    loader = {"source": "local_file", "root_dir": str(items_dir)}
    start_ref = f"run:{tiny_start_run}"
    first = build_index(store=create_vector_store(settings), pointers=BluePointers(mongo_db),
                        model=ModelRef.parse(start_ref).load(mlflow_server.url), model_ref=start_ref, loader_config=loader,
                        items=[ItemRef(object_id=i, meta={"path": f"{i}.txt"}) for i in items],
                        pointer_name=f"api-{uuid.uuid4().hex[:6]}")
    env["CLICKTUNE_BLUE_POINTER_NAME"] = first.pointer
    worker = start_worker({**env, "CLICKTUNE_WORKER_METRICS_PORT": str(worker_port),
                           "CLICKTUNE_WORKER_METRICS_DIR": str(tmp_path / "prom")}, threads=1)
    api = start_api(env)
    ingest, tasks, search = ({"X-API-Key": k} for k in (keys.ingest, keys.tasks, keys.search))
    try:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            # --- clickstream in: one session alone, then the rest in bulk with three bad records
            one = http.post("/v1/clickstream/sessions", json=records[0], headers=ingest)
            assert one.status_code == 201 and one.json()["accepted_sessions"] == 1, one.text
            assert http.post("/v1/clickstream/sessions", json=records[0], headers=ingest).status_code == 200
            bad_session = http.post("/v1/clickstream/sessions", json={**records[1], "search_results": "nope"},
                                    headers=ingest)
            assert bad_session.status_code == 422 and "search_results" in bad_session.json()["message"]
            bulk = [*records[1:80], {"session_id": "empty-query", "search_query": "", "created_at": "2024-01-01T00:00:00Z"},
                    {"event_id": "orphan", "session_id": "no-such-session", "object_id": "x", "created_at": "2024-01-01T00:00:00Z"},
                    42, *records[80:]]
            report = http.post("/v1/clickstream/records/bulk", json={"records": bulk}, headers=ingest).json()
            assert report["accepted_sessions"] == len(records) - 1
            assert [r["index"] for r in report["rejected"]] == [79, 80, 81]
            reasons = [r["reason"] for r in report["rejected"]]
            assert "search_query" in reasons[0] and "unknown session" in reasons[1] and "JSON object" in reasons[2]
            replay = http.post("/v1/clickstream/records/bulk", json={"records": records[1:5]}, headers=ingest).json()
            assert replay["duplicate_sessions"] == 4 and replay["accepted_sessions"] == 0
            session = records[2]
            event = {"event_id": f"{session['session_id']}:late", "object_id": session["search_results"][0]["object_id"],
                     "created_at": "2024-01-01T00:01:00Z"}
            url = f"/v1/clickstream/sessions/{session['session_id']}/events"
            assert http.post(url, json=event, headers=ingest).status_code == 201
            assert http.post(url, json=event, headers=ingest).status_code == 200  # idempotent per event id
            wrong_object = http.post(url, json={**event, "event_id": "e-x", "object_id": "never-shown"}, headers=ingest)
            assert wrong_object.status_code == 422 and "was not shown" in wrong_object.json()["message"]
            bulk_events = http.post("/v1/clickstream/events/bulk", headers=ingest, json={"events": [
                {**event, "event_id": "b1", "session_id": session["session_id"]}, {"event_id": "b2"}]}).json()
            assert bulk_events["accepted_events"] == 1 and [r["index"] for r in bulk_events["rejected"]] == [1]
            irrelevant = http.put(f"/v1/clickstream/sessions/{records[3]['session_id']}/irrelevant", json={},
                                  headers=ingest)
            assert irrelevant.status_code == 200 and irrelevant.json()["is_irrelevant"] is True
            released = http.post("/v1/clickstream/release", json={"release_id": "nightly-1"}, headers=ingest).json()
            again = http.post("/v1/clickstream/release", json={"release_id": "nightly-1"}, headers=ingest).json()
            assert released["batch_id"] == again["batch_id"] and released["session_count"] == len(records)
            assert http.post("/v1/clickstream/release", json={}, headers=ingest).status_code == 409
            assert [b["batch_id"] for b in http.get("/v1/clickstream/batches", headers=ingest).json()] == [released["batch_id"]]

            # --- search before: blue is the start model
            query = records[0]["search_query"]
            before = http.post("/v1/search", json={"query": query, "k": 5}, headers=search).json()
            assert before["model_ref"] == start_ref and before["collection"] == first.collection
            assert len(before["results"]) == 5 and before["results"][0]["meta"]["path"].endswith(".txt")

            # --- fine-tuning through HTTP, watched to done (idempotent enqueue)
            request = {"embedding_model_id": start_ref, "batch_id": released["batch_id"], "idempotency_key": "ft-1",
                       "options": {"loader": loader, "max_evals": 1, "num_epochs": 1, "max_steps": 6, "batch_size": 8,
                                   "test_size": 0.25, "model_line": f"api-{uuid.uuid4().hex[:8]}"}}
            created = http.post("/v1/tasks/fine-tuning", json=request, headers=tasks)
            assert created.status_code == 202, created.text
            task_id = created.json()["task_id"]
            assert http.post("/v1/tasks/fine-tuning", json=request, headers=tasks).json()["task_id"] == task_id
            # the only worker thread is busy: a second task stays pending, is canceled, restarted, canceled
            other = http.post("/v1/tasks/fine-tuning", json={**request, "idempotency_key": "ft-2"}, headers=tasks).json()
            canceled = http.post(f"/v1/tasks/{other['task_id']}/cancel", headers=tasks).json()
            assert canceled["status"] == "canceled"
            restarted = http.post(f"/v1/tasks/{other['task_id']}/restart", headers=tasks)
            assert restarted.status_code == 202
            new_id = restarted.json()["task_id"]
            assert http.get(f"/v1/tasks/{new_id}", headers=tasks).json()["parent_id"] == other["task_id"]
            not_finished = http.post(f"/v1/tasks/{new_id}/restart", headers=tasks)
            assert not_finished.status_code == 409 and not_finished.json()["error"] == "conflict"
            assert http.post(f"/v1/tasks/{new_id}/cancel", headers=tasks).json()["status"] == "canceled"
            assert http.get("/v1/tasks/no-such-task", headers=tasks).status_code == 404

            task = _wait_done(http, task_id, tasks, timeout=400)
            assert task["progress"]["step"] > 0 and task["result"]["best_run_id"]
            listed = http.get("/v1/tasks", params={"kind": "fine_tuning", "status": "done"}, headers=tasks).json()
            assert [t["_id"] for t in listed] == [task_id]

            # --- reindex to the best run; blue moves; search follows it (the API swaps its model)
            reindex = http.post("/v1/tasks/reindex", headers=tasks, json={
                "dest_run_id": f"run:{task['result']['best_run_id']}", "wait_on_conflict": True,
                "idempotency_key": f"deploy:{task_id}"})
            assert reindex.status_code == 202
            reindexed = _wait_done(http, reindex.json()["task_id"], tasks, timeout=240)
            blue = http.get(f"/v1/blue/{first.pointer}", headers=tasks).json()
            assert blue["collection"] == reindexed["result"]["collection"] != first.collection
            assert blue["model_ref"] == f"run:{task['result']['best_run_id']}" and blue["version"] == 2
            after = http.post("/v1/search", json={"query": query, "k": 5}, headers=search).json()
            assert after["model_ref"] == blue["model_ref"] and after["collection"] == blue["collection"]
            # the API's answers are the blue collection queried with the new model
            tuned = ModelRef.parse(blue["model_ref"]).load(mlflow_server.url)
            store = create_vector_store(settings)
            for record in records[:10]:
                found = http.post("/v1/search", json={"query": record["search_query"], "k": 10}, headers=search).json()
                direct = store.query(blue["collection"], tuned.encode_queries([record["search_query"]]), k=10)
                assert [r["object_id"] for r in found["results"]] == direct.ids[0]
            # `clicktune search` answers the same as the API (one search module)
            cli = subprocess.run([CLICKTUNE, "search", query, "--k", "5", "--json"], capture_output=True, text=True,
                                 env={**os.environ, **env, "PYTHONPATH": str(REPO)}, timeout=120)
            assert cli.returncode == 0, cli.stderr
            api_top = http.post("/v1/search", json={"query": query, "k": 5}, headers=search).json()["results"]
            assert [hit["object_id"] for hit in json.loads(cli.stdout)["results"]] == [hit["object_id"] for hit in api_top]
            missing = http.post("/v1/search", json={"query": "x", "deployment": "nobody"}, headers=search)
            assert missing.status_code == 404

            # --- metrics after the tasks ran
            scraped = metrics(http.get("/metrics").text)
            assert scraped[("clicktune_tasks", (("kind", "fine_tuning"), ("status", "done")))] == 1
            assert scraped[("clicktune_tasks", (("kind", "fine_tuning"), ("status", "canceled")))] == 2
            assert scraped[("clicktune_tasks", (("kind", "reindex"), ("status", "done")))] == 1
            assert scraped[("clicktune_training_steps", ())] >= task["progress"]["step"] > 0
            deployment = (("deployment", first.pointer),)
            assert scraped[("clicktune_blue_version", deployment)] == 2
            assert 0 <= scraped[("clicktune_blue_model_age_seconds", deployment)] < 300
            assert abs(scraped[("clicktune_blue_last_deploy_timestamp_seconds", deployment)] - time.time()) < 300
            assert scraped[("clicktune_ingest_sessions_total", (("outcome", "accepted"),))] == len(records)
            assert scraped[("clicktune_ingest_sessions_total", (("outcome", "duplicate"),))] == 5
            assert scraped[("clicktune_ingest_rejected_records_total", ())] == 5
            assert scraped[("clicktune_clickstream_sessions", (("batch_status", "released"),))] == len(records)
            search_ok = (("method", "POST"), ("route", "/v1/search"), ("status", "200"))
            assert scraped[("clicktune_api_requests_total", search_ok)] == 13
            assert scraped[("clicktune_api_request_duration_seconds_count", (("method", "POST"), ("route", "/v1/search")))] == 14
            worker_metrics = metrics(httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).text)
            processed = {labels: value for (name, labels), value in worker_metrics.items()
                         if name == "dramatiq_messages_total"}
            assert processed[(("actor_name", "fine_tuning"), ("queue_name", "fine_tuning"))] >= 1
            assert processed[(("actor_name", "reindex"), ("queue_name", "reindex"))] >= 1
            # the worker proves it consumes: a fresh heartbeat key, which the compose healthcheck reads
            assert list(clicktune_client.broker.client.scan_iter(heartbeat_key_prefix(worker_settings.redis_namespace) + "*"))
            health = subprocess.run([sys.executable, str(REPO / "docker" / "healthcheck.py"), "--worker", "--api", api.url],
                                    env={**os.environ, **env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                                    timeout=60)
            assert health.returncode == 0, health.stdout + health.stderr
    finally:
        api.stop()
    # a killed worker stops proving consumption within three heartbeat periods: the healthcheck turns red
    worker.kill()
    prefix = heartbeat_key_prefix(worker_settings.redis_namespace)
    wait_for(lambda: not list(clicktune_client.broker.client.scan_iter(prefix + "*")), timeout=15, what="heartbeat expiry")
    health = subprocess.run([sys.executable, str(REPO / "docker" / "healthcheck.py"), "--worker"],
                            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert health.returncode == 1 and "no worker process" in health.stdout
    log = api.log_tail(2_000_000)
    assert "POST /v1/search" in log and not any(key in log for key in keys.all())


def _wait_done(http: httpx.Client, task_id: str, headers: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = http.get(f"/v1/tasks/{task_id}", headers=headers).json()
        if task["status"] in {"done", "failed", "refused", "canceled"}:
            assert task["status"] == "done", task.get("detail")
            return task
        assert time.monotonic() < deadline, f"task {task_id} still {task['status']}: {task.get('progress')}"
        time.sleep(0.5)
