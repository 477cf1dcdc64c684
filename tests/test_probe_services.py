"""The probe's real work against PostgreSQL and MLflow (worker/jobs/probe_job.py), through a real
worker: a backend killed mid-probe and an MLflow server that is down both end the attempt as an
infrastructure error (retried, then done); a table outside the allow-list is refused at once; the
DSN's password never reaches a task document or the worker's log."""

from __future__ import annotations

import time

import pytest

from dao.task_documents import TaskStatus
from tests.fixtures.services import PG_DSN
from worker.local_services import free_port, start_mlflow_server

SECRET = "probe-pw-7f3a"  # trust auth ignores it; it must still never be shown


def _executions(client, task_id: str) -> list[dict]:
    return list(client.db["probe_executions"].find({"task_id": task_id}, {"_id": 0}).sort("attempt", 1))


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_pg_backend_killed_mid_probe_is_retried_and_done(pg_schema, start_worker, clicktune_client):
    import psycopg2
    from psycopg2 import sql

    admin = psycopg2.connect(PG_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {}.rows (id integer PRIMARY KEY, text text)").format(sql.Identifier(pg_schema)))
        cur.execute(sql.SQL("INSERT INTO {}.rows SELECT i, 'r' || i FROM generate_series(1, 9) i").format(sql.Identifier(pg_schema)))
    table = f"{pg_schema}.rows"
    worker = start_worker({"CLICKTUNE_PG_DSN": f"{PG_DSN} password={SECRET}", "CLICKTUNE_LOADER_ALLOWED_TABLES": table})
    try:
        task_id = clicktune_client.enqueue_probe(3.0, pg_table=table)
        name = f"clicktune-probe-{task_id}"

        def backend() -> int | None:  # this task's connection, idle in the probe's sleep
            with admin.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND state = 'idle'", (name,))
                row = cur.fetchone()
            return row[0] if row else None

        pid = _wait_for(backend, 60, "the probe's PostgreSQL connection")
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        done = clicktune_client.wait(task_id, timeout=60)
        assert done.status is TaskStatus.done and done.attempt == 2, done
        assert done.result["pg_rows_read"] == 10  # 5 rows at the start and 5 at the end of the retried attempt
        runs = _executions(clicktune_client, task_id)
        assert [(run["attempt"], run["finished"], run.get("failed_on")) for run in runs] == [(1, False, "pg"), (2, True, None)]

        # A table the operator did not allow is a permanent source error: refused, not retried.
        refused = clicktune_client.wait(clicktune_client.enqueue_probe(0.0, pg_table=f"{pg_schema}.other"), timeout=30)
        assert refused.status is TaskStatus.refused and refused.attempt == 1
        assert "CLICKTUNE_LOADER_ALLOWED_TABLES" in refused.detail and "permanent" in refused.detail

        stored = list(clicktune_client.db["probe_tasks"].find({}))
        assert stored and SECRET not in repr(stored)
        assert SECRET not in worker.log_tail(1_000_000)
        assert "SourceUnavailableError: probe pg_table read failed" in worker.log_tail(1_000_000)  # attempt 1
    finally:
        admin.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mlflow_down_then_up_is_retried_and_the_run_logged(start_worker, clicktune_client, worker_settings, tmp_path):
    from mlflow import MlflowClient

    from worker.client import ClicktuneClient

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # retries every few seconds for as long as the MLflow server takes to start on a loaded machine: the
    # worker's backoff is capped, and the task (whose attempts the client sets) allows as many as the worker
    start_worker({"CLICKTUNE_MLFLOW_TRACKING_URI": url, "CLICKTUNE_MAX_RETRIES": "30", "CLICKTUNE_MAX_BACKOFF_MS": "8000"})
    patient = ClicktuneClient(worker_settings.model_copy(update={"max_retries": 30}))
    task_id = patient.enqueue_probe(0.1, mlflow_experiment="probe-test")
    _wait_for(lambda: any(run.get("failed_on") == "mlflow" for run in _executions(clicktune_client, task_id)),
              120, "an attempt ended by MLflow being down")
    with start_mlflow_server(tmp_path / "mlflow", port=port):
        done = clicktune_client.wait(task_id, timeout=120)
        assert done.status is TaskStatus.done and done.attempt >= 2, done
        run = MlflowClient(tracking_uri=url).get_run(done.result["mlflow_run_id"])
        assert run.data.metrics["slept_s"] >= 0.1 and run.data.tags["clicktune.task_id"] == task_id
    assert bool(_executions(clicktune_client, task_id)[-1]["finished"])
