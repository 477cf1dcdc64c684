"""The task commands of the ``clicktune`` CLI against real Redis, Mongo and a worker process."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from worker.cli.tasks_cli import standalone_app
from worker.settings import get_settings

runner = CliRunner()
app = standalone_app()


@pytest.fixture
def cli_env(worker_env, monkeypatch, clicktune_client):
    for key, value in worker_env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield worker_env
    get_settings.cache_clear()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_enqueue_status_tasks_cancel_restart(cli_env, clicktune_client):
    first = invoke("enqueue", "base:all-MiniLM-L6-v2", "batch-7", "--max-evals", "3",
                   "--options", '{"num_epochs": 2}', "--idempotency-key", "cli-k", "--deploy-as-blue")
    assert first.exit_code == 0, first.output
    task_id = first.output.strip()
    again = invoke("enqueue", "base:all-MiniLM-L6-v2", "batch-7", "--idempotency-key", "cli-k")
    assert again.output.strip() == task_id
    stored = clicktune_client.status(task_id)
    assert stored.options.max_evals == 3 and stored.options.num_epochs == 2 and stored.deploy_as_blue

    bad = invoke("enqueue", "gpt-17", "batch-7")
    assert bad.exit_code == 2 and "embedding_model_id" in bad.output
    bad_options = invoke("enqueue", "base:all-MiniLM-L6-v2", "b", "--options", '{"lr": 1}')
    assert bad_options.exit_code == 2 and "options.lr" in bad_options.output

    shown = invoke("status", task_id, "--json")
    assert shown.exit_code == 0 and json.loads(shown.output)["status"] == "pending"
    listed = invoke("tasks", "--status", "pending", "--json")
    assert [t["_id"] for t in json.loads(listed.output)] == [task_id]

    canceled = invoke("cancel", task_id)
    assert canceled.exit_code == 0 and "canceled" in canceled.output
    restarted = invoke("restart", task_id)
    new_id = restarted.output.strip()
    assert restarted.exit_code == 0 and new_id != task_id
    assert clicktune_client.status(new_id).parent_id == task_id
    assert invoke("restart", new_id).exit_code == 1  # pending: not restartable
    assert invoke("status", "0" * 32).exit_code == 1


def test_probe_and_watch_until_done(cli_env, start_worker):
    start_worker()
    enqueued = invoke("probe", "--seconds", "1")
    assert enqueued.exit_code == 0, enqueued.output
    task_id = enqueued.output.strip()
    watched = invoke("status", task_id, "--watch", "--interval", "0.1")
    assert watched.exit_code == 0, watched.output
    assert "done" in watched.output and task_id in watched.output


def test_probe_can_ask_for_postgresql_and_mlflow_work(cli_env, clicktune_client):
    enqueued = invoke("probe", "--seconds", "0", "--pg-table", "public.items", "--mlflow-experiment", "probes")
    assert enqueued.exit_code == 0, enqueued.output
    task = clicktune_client.status(enqueued.output.strip())
    assert (task.pg_table, task.mlflow_experiment) == ("public.items", "probes")
    plain = clicktune_client.status(invoke("probe", "--seconds", "0").output.strip())
    assert (plain.pg_table, plain.mlflow_experiment) == (None, None)


def test_a_fine_tuning_result_shows_the_figure_that_chose_the_weights_first():
    """A pure formatting test (no service): the exploration figure that chose leads, the main metric follows."""
    from datetime import datetime, timezone

    from dao.task_documents import TaskDocument
    from worker.cli.tasks_cli import _result_lines

    now = datetime.now(timezone.utc)
    names = ["val_loss", "val_mrr@10", "val_ndcg@10", "val_own_mrr@10", "val_own_ndcg@10", "val_own_recall@10",
             "val_rand_mrr@10", "val_rand_recall@10", "val_rand_ndcg@10", "val_recall@10"]
    task = TaskDocument(_id="t1", kind="fine_tuning", created_at=now, updated_at=now, result={
        "main_metric": "val_ndcg@10", "quality_metric": "val_rand_ndcg@10",
        "metrics_before": {name: 0.5 for name in names}, "metrics_after": {name: 0.6 for name in names}})
    lines = _result_lines(task)
    assert lines[0].strip() == "val_rand_ndcg@10 (chose the weights): 0.5000 → 0.6000 (+0.1000)"
    assert lines[1].strip().startswith("val_ndcg@10 (main): ")
    assert len(lines) == 8 and not any("quality_metric" in line for line in lines)
