"""Worker logs: every line of a task names it, JSON mode is one object a line, secrets and chatter are gone.

Units on a private logger tree; then a real ``clicktune worker`` process (JSON logs, an MLflow URI with
credentials) running a tiny fine-tuning task through the real ``mlflow server``.
"""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from dao.task_documents import TaskStatus
from tests.fixtures.fine_tuning import clickstream_records, ingest_and_release, write_items
from worker.logs import (
    JsonFormatter,
    KnownWarningsFilter,
    RedactingFilter,
    RedactingStream,
    TaskContextFilter,
    TextFormatter,
    current_task,
    secret_values,
    task_log_context,
)
from worker.settings import Settings


def _logger(formatter: logging.Formatter, redactor: RedactingFilter) -> tuple[logging.Logger, io.StringIO]:
    """A parent logger with one handler (filters on the handler, as on the root) and a 'third-party' child."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(TaskContextFilter())
    handler.addFilter(redactor)
    handler.setFormatter(formatter)
    parent = logging.getLogger(f"test-logs-{uuid.uuid4().hex[:6]}")
    parent.handlers, parent.propagate = [handler], False
    parent.setLevel(logging.INFO)
    return parent, out


def test_lines_inside_a_task_carry_its_id_and_kind_in_text_and_json():
    redactor = RedactingFilter([])
    text_logger, text_out = _logger(TextFormatter(redactor), redactor)
    json_logger, json_out = _logger(JsonFormatter(redactor), redactor)
    third_party = logging.getLogger(f"{json_logger.name}.lightning")  # propagates to the handler
    text_logger.info("before")
    with task_log_context("t-123", "probe"):
        assert current_task() == ("t-123", "probe")
        text_logger.info("inside")
        json_logger.info("inside %s", "json")
        third_party.warning("third party")
    json_logger.info("after")
    assert current_task() is None

    lines = text_out.getvalue().splitlines()
    assert "[probe t-123] inside" in lines[1] and "t-123" not in lines[0]
    records = [json.loads(line) for line in json_out.getvalue().splitlines()]
    assert [(r["message"], r["task_id"], r["task_kind"]) for r in records] == [
        ("inside json", "t-123", "probe"), ("third party", "t-123", "probe"), ("after", None, None)]
    assert records[1]["logger"].endswith(".lightning") and records[1]["level"] == "WARNING"


def test_credentials_and_secret_values_are_redacted_in_messages_args_tracebacks_and_colours():
    redactor = RedactingFilter(["S3cretAwsKey-x9"])
    logger, out = _logger(JsonFormatter(redactor), redactor)
    logger.info("View run at: http://%s@mlflow:5000/#/runs/1", "alice:Pa55w0rd-mlflow")
    logger.warning("\x1b[33mkey %s in use\x1b[0m", "S3cretAwsKey-x9")
    try:
        raise ConnectionError("redis://:R3dis-pass@127.0.0.1:1/0 refused")
    except ConnectionError:
        logger.exception("failed")
    text = out.getvalue()
    for secret in ("Pa55w0rd-mlflow", "S3cretAwsKey-x9", "R3dis-pass", "\x1b["):
        assert secret not in text
    first, second, third = (json.loads(line) for line in text.splitlines())
    assert first["message"] == "View run at: http://***@mlflow:5000/#/runs/1"
    assert second["message"] == "key *** in use"
    assert "redis://***@127.0.0.1:1/0" in third["exc"]


def test_secret_values_come_from_every_secret_setting(monkeypatch):
    monkeypatch.setenv("CLICKTUNE_AWS_SECRET_ACCESS_KEY", "aws-S3CRET-1")
    monkeypatch.setenv("CLICKTUNE_PG_DSN", "host=db user=u password=pg-S3CRET-2")
    settings = Settings(mongo_url="mongodb://u:mongo-S3CRET-3@h:27017", redis_url="redis://:redis-S3CRET-4@h:6379/0",
                        mlflow_tracking_uri="http://u:mlflow-S3CRET-5@h:5000", chroma_auth_token="chroma-S3CRET-6")
    values = secret_values(settings)
    for n, secret in enumerate(["aws-S3CRET-1", "pg-S3CRET-2", "mongo-S3CRET-3", "redis-S3CRET-4",
                                "mlflow-S3CRET-5", "chroma-S3CRET-6"], 1):
        assert secret in values, n


def test_printed_text_is_redacted_and_known_warnings_are_dropped():
    target = io.StringIO()
    stream = RedactingStream(target, RedactingFilter(["tok-123456"]))
    print("🏃 View run x at: http://bob:hunter22@h:5000/#/r tok-123456", file=stream)
    assert target.getvalue() == "🏃 View run x at: http://***@h:5000/#/r ***\n"

    known = logging.makeLogRecord({"msg": "/x.py:1: UserWarning: \x1b[33mAdd type hints to the `predict` method "
                                          "to enable data validation\x1b[0m", "name": "py.warnings"})
    other = logging.makeLogRecord({"msg": "/x.py:1: UserWarning: something new", "name": "py.warnings"})
    assert KnownWarningsFilter().filter(known) is False and KnownWarningsFilter().filter(other) is True


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.mark.slow
def test_worker_json_logs_name_the_task_and_hold_no_secret_or_chatter(tmp_path, mongo_db, worker_settings, start_worker,
                                                                      clicktune_client, mlflow_server, tiny_start_run):
    items, records = clickstream_records(n_items=30, n_sessions=40, seed=21)
    items_dir = write_items(tmp_path / "items", items)
    batch_id = ingest_and_release(mongo_db, records)
    password = "MlflowPassw0rd-" + uuid.uuid4().hex[:6]
    uri = mlflow_server.url.replace("http://", f"http://logs-user:{password}@")
    worker = start_worker({"CLICKTUNE_LOG_FORMAT": "json", "CLICKTUNE_MLFLOW_TRACKING_URI": uri,
                           "CLICKTUNE_CHROMA_PATH": str(tmp_path / "chroma"), "HF_HUB_OFFLINE": "1",
                           "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                           "TOKENIZERS_PARALLELISM": "false"}, threads=1)
    task_id = clicktune_client.enqueue_fine_tuning({
        "embedding_model_id": f"run:{tiny_start_run}", "batch_id": batch_id,
        "options": {"loader": {"source": "local_file", "root_dir": str(items_dir)}, "max_evals": 1,
                    "max_steps": 2, "batch_size": 4, "model_line": f"logs-{uuid.uuid4().hex[:8]}"}})
    task = clicktune_client.wait(task_id, timeout=300, poll_s=0.5)
    assert task.status is TaskStatus.done, task.detail
    worker.stop(timeout=15)
    log = worker.log_path.read_text()

    not_json = [line for line in log.splitlines() if line.strip() and not _is_json(line)]
    assert not_json == [], not_json[:10]  # JSON mode: every line parses
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message", "task_id"} <= set(line) for line in lines)
    ours = [line for line in lines if line["task_id"] == task_id]
    assert ours and all(line["task_kind"] == "fine_tuning" for line in ours)
    # every line the job's thread wrote while the task ran names the task
    first, last = lines.index(ours[0]), lines.index(ours[-1])
    job_thread = ours[0]["thread"]
    during = [line for line in lines[first:last + 1] if line["thread"] == job_thread]
    assert all(line["task_id"] == task_id for line in during), [l for l in during if l["task_id"] != task_id][:3]
    for noise in (password, "\x1b[", "💡 Tip", "litlogger", "GPU available", "View run", "deprecated"):
        assert noise not in log, noise
    print(f"{len(lines)} log lines, {len(ours)} inside the task")
    for line in lines:
        print(line["level"], line["logger"], line["task_id"], line["message"][:150])
