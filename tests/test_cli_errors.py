"""The ``clicktune`` CLI when things go wrong, and what it shows when they went right.

Real services throughout: the session's MongoDB wire server and Redis, and closed ports (a port
nothing listens on) for the services that are down — no mocks.
"""

from __future__ import annotations

import re
import uuid

import click
import pytest
import typer
from typer.testing import CliRunner

from dao.blue_pointer import BluePointer, BluePointers
from dao.task_documents import TaskStatus
from dao.tasks import TasksDAO
from worker.cli.main import app
from worker.local_services import free_port
from worker.settings import get_settings

runner = CliRunner()
MODEL = "base:all-MiniLM-L6-v2"


@pytest.fixture
def cli_env(worker_env, monkeypatch, clicktune_client):
    """The test's services in this process's environment (the CLI reads CLICKTUNE_* settings)."""
    def apply(**overrides: str) -> None:
        for key, value in {**worker_env, **overrides}.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    apply()
    yield apply
    get_settings.cache_clear()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def closed_port_url(scheme: str, credentials: str, path: str = "") -> str:
    return f"{scheme}://{credentials}@127.0.0.1:{free_port()}{path}"


def assert_one_line(result, *expected: str, secret: str) -> str:
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and secret not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output  # the last word
    for part in expected:
        assert part in errors[0], errors[0]
    return errors[0]


def test_unreachable_mongo_is_one_line_naming_the_setting(cli_env):
    secret = "M0ngoPass-" + uuid.uuid4().hex[:6]
    cli_env(CLICKTUNE_MONGO_URL=closed_port_url("mongodb", f"user:{secret}", "/?directConnection=true"))
    text = assert_one_line(invoke("tasks"), "cannot reach MongoDB at CLICKTUNE_MONGO_URL (mongodb://***@127.0.0.1:",
                           "connection refused", secret=secret)
    assert text.startswith("error: ")
    # the same one place covers the commands of a sub-app
    assert_one_line(invoke("clickstream", "batches"), "cannot reach MongoDB at CLICKTUNE_MONGO_URL", secret=secret)


def test_unreachable_redis_leaves_no_task_behind_and_the_same_call_works_once_redis_is_back(cli_env, worker_env,
                                                                                          clicktune_client):
    secret = "R3disPass-" + uuid.uuid4().hex[:6]
    cli_env(CLICKTUNE_REDIS_URL=closed_port_url("redis", f":{secret}", "/0"))
    down = invoke("enqueue", MODEL, "batch-1", "--idempotency-key", "nightly-1")
    assert_one_line(down, "cannot reach Redis at CLICKTUNE_REDIS_URL (redis://***@127.0.0.1:", "connection refused",
                    secret=secret)
    assert clicktune_client.list_tasks() == []  # rolled back: nothing pending that nothing will send
    assert_one_line(invoke("probe"), "CLICKTUNE_REDIS_URL", secret=secret)
    assert clicktune_client.list_tasks() == []

    cli_env()  # Redis is back: the same call enqueues and sends
    up = invoke("enqueue", MODEL, "batch-1", "--idempotency-key", "nightly-1")
    assert up.exit_code == 0, up.output
    task = clicktune_client.status(up.output.strip())
    assert task.status is TaskStatus.pending and task.broker_message_id


def test_unreachable_mlflow_is_one_line_naming_the_setting(cli_env, monkeypatch):
    secret = "Mlfl0wPass-" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cli_env(CLICKTUNE_MLFLOW_TRACKING_URI=closed_port_url("http", f"user:{secret}"))
    result = invoke("index", "--model", "run:" + "ab" * 16, "--items-config",
                    '{"loader": {"source": "local_file", "root_dir": "/tmp"}, "items": [{"object_id": "a"}]}')
    assert_one_line(result, "cannot reach the MLflow tracking server at CLICKTUNE_MLFLOW_TRACKING_URI "
                    "(http://***@127.0.0.1:", secret=secret)


def test_a_forbidden_field_is_refused_without_echoing_its_value_and_nothing_is_stored(cli_env, clicktune_client):
    secret = "Hunter2-" + uuid.uuid4().hex[:6]
    loader = f'{{"source": "local_file", "root_dir": "/data", "password": "{secret}"}}'
    in_loader = invoke("enqueue", MODEL, "batch-1", "--loader", loader)
    assert in_loader.exit_code == 2 and secret not in in_loader.output
    assert "options.loader.local_file.password: Extra inputs are not permitted" in in_loader.output
    in_options = invoke("enqueue", MODEL, "batch-1", "--options", f'{{"aws_secret_access_key": "{secret}"}}')
    assert in_options.exit_code == 2 and secret not in in_options.output
    assert "options.aws_secret_access_key" in in_options.output
    assert clicktune_client.list_tasks() == []


def test_status_shows_the_result_without_json(cli_env, clicktune_client, worker_settings):
    task_id = clicktune_client.enqueue_fine_tuning({"embedding_model_id": MODEL, "batch_id": "b-1"})
    dao = TasksDAO.for_kind(clicktune_client.db, "fine_tuning")
    assert dao.claim(task_id, "test-owner", 30) is not None
    result = {"best_run_id": "c" * 32, "registered_model_name": "clicktune-shop", "registered_model_version": "3",
              "main_metric": "ndcg@10", "metrics_before": {"ndcg@10": 0.8, "mrr@10": 0.7},
              "metrics_after": {"ndcg@10": 0.85, "mrr@10": 0.72}, "deployed": False,
              "deploy_reason": "the candidate does not beat the start by more than 0.01"}
    assert dao.finish(task_id, "test-owner", TaskStatus.done, result=result)

    shown = invoke("status", task_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert task_id in lines[0] and "done" in lines[0]
    assert any("model: clicktune-shop version 3" in line and "c" * 32 in line for line in lines)
    assert any("deployed: no — the candidate does not beat the start" in line for line in lines)
    assert any(re.search(r"ndcg@10 \(main\): 0\.8000 → 0\.8500 \(\+0\.0500\)", line) for line in lines)
    assert any("mrr@10: 0.7000 → 0.7200" in line for line in lines)


def test_tasks_shows_whole_ids_and_wide_shows_whole_details(cli_env, clicktune_client):
    ids = [clicktune_client.enqueue_probe(0) for _ in range(2)]
    listed = invoke("tasks")
    assert listed.exit_code == 0 and all(task_id in listed.output for task_id in ids), listed.output
    dao = TasksDAO.for_kind(clicktune_client.db, "probe")
    detail = "a long detail " * 12 + "END"
    dao.claim(ids[0], "o", 30)
    dao.finish(ids[0], "o", TaskStatus.failed, detail=detail)
    assert "END" not in invoke("tasks").output
    wide = invoke("tasks", "--wide")
    assert wide.exit_code == 0 and "END" in wide.output and "finished" in wide.output


def test_blue_with_a_missing_chroma_path_says_so_and_creates_nothing(cli_env, clicktune_client, tmp_path):
    BluePointers(clicktune_client.db).create(BluePointer(collection="c1", model_ref=MODEL, item_count=3))
    missing = tmp_path / "no-such-store"
    cli_env(CLICKTUNE_CHROMA_PATH=str(missing))
    result = invoke("blue")
    assert result.exit_code == 1 and "no Chroma store at CLICKTUNE_CHROMA_PATH" in result.output
    assert str(missing) in result.output and not missing.exists()
    listed = invoke("blue", "--no-count")
    assert listed.exit_code == 0 and "c1" in listed.output


def test_version_and_help_texts_in_plain_words():
    from importlib.metadata import version

    shown = invoke("--version")
    assert shown.exit_code == 0 and shown.output.strip() == f"clicktune {version('clicktune')}"

    def walk(command: click.Command, path: list[str]):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    paths = list(walk(typer.main.get_command(app), []))
    assert len(paths) > 10
    for path in paths:
        result = invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "``" not in result.output and ":class:" not in result.output, (path, result.output)


def test_index_scan_directory_outside_the_allowed_roots_is_a_usage_error(cli_env, tmp_path):
    (tmp_path / "items").mkdir()
    cli_env(CLICKTUNE_LOADER_ALLOWED_ROOTS=str(tmp_path / "items"))
    result = invoke("index", "--model", MODEL, "--items-config",
                    '{"loader": {"source": "local_file", "root_dir": "/etc"}, "scan_directory": true}')
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "CLICKTUNE_LOADER_ALLOWED_ROOTS" in " ".join(result.output.split()), result.output


def test_qa_train_and_images_optimize_name_the_invalid_field_without_echoing_its_value(tmp_path):
    config = tmp_path / "qa.json"
    config.write_text('{"loss": "SECRET-loss-42", "input_jsonl": "pairs.jsonl"}')
    result = runner.invoke(app, ["qa-train", "--config", str(config)])
    assert result.exit_code == 2 and "loss" in result.output and "SECRET-loss-42" not in result.output, result.output
    result = runner.invoke(app, ["images-optimize", "--digits", "--output-dir", str(tmp_path / "out"),
                                 "--calibration", "SECRET-calibration-42"])
    assert result.exit_code == 2 and "calibration" in result.output, result.output
    assert "SECRET-calibration-42" not in result.output
