"""``clicktune simulate-clicks`` and ``clicktune clickstream import/release/batches/export`` end to
end: real SciFact data, a real Mongo wire server, the typer app as a user runs it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from worker.cli.main import app
from worker.settings import get_settings


@pytest.fixture
def cli_env(mongo_server, mongo_db, monkeypatch):
    monkeypatch.setenv("CLICKTUNE_MONGO_URL", mongo_server.url)
    monkeypatch.setenv("CLICKTUNE_MONGO_DB", mongo_db.name)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield mongo_db
    get_settings.cache_clear()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_simulate_import_release_list_export(cli_env, scifact_dir, tmp_path):
    sessions_file = tmp_path / "sessions.jsonl"
    result = invoke(
        "simulate-clicks", "--dataset", str(scifact_dir), "--split", "train", "--top-k", "5",
        "--sessions-per-query", "2", "--seed", "3", "--ranker", "bm25", "--max-queries", "25",
        "--randomize-share", "0.4", "--meta-template", '{"bucket": "docs", "key": "scifact/{object_id}.json"}', "--out", str(sessions_file),
    )
    assert result.exit_code == 0, result.output
    assert "wrote 50 sessions" in result.output
    records = [json.loads(line) for line in sessions_file.read_text().splitlines()]
    assert len(records) == 50 and all(len(r["search_results"]) == 5 for r in records)
    assert records[0]["search_results"][0]["meta"]["key"] == f"scifact/{records[0]['search_results'][0]['object_id']}.json"
    explored = {r["session_id"] for r in records if r["search_meta"].get("randomized") is True}
    assert 0 < len(explored) < 50

    refused = CliRunner().invoke(app, ["simulate-clicks", "--dataset", str(scifact_dir), "--split", "test", "--out", str(tmp_path / "t.jsonl")])
    assert refused.exit_code == 2 and not (tmp_path / "t.jsonl").exists()

    # a file with two broken lines: the good ones are stored, the bad ones listed by line number
    with sessions_file.open("a") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps({"event_id": "e-x", "session_id": "nope", "object_id": "1", "created_at": "2024-01-01T00:00:00Z"}) + "\n")
    result = invoke("clickstream", "import", str(sessions_file), "--chunk-size", "16")
    assert result.exit_code == 1, result.output
    events = sum(len(r["events"]) for r in records)
    assert "50 accepted" in result.output and f"{events} accepted" in result.output and "2 rejected" in result.output
    assert "invalid JSON" in result.output and "unknown session nope" in result.output
    assert " 51 " in result.output and " 52 " in result.output  # the 1-based line numbers of the rejects
    assert cli_env.clickstream_sessions.count_documents({}) == 50
    # the exploration mark is stored with the session, for the held-out judge to find
    stored = {d["session_id"] for d in cli_env.clickstream_sessions.find({}) if (d.get("search_meta") or {}).get("randomized") is True}
    assert stored == explored

    again = invoke("clickstream", "import", str(sessions_file))
    assert "0 accepted" in again.output and "50 already stored" in again.output

    released = invoke("clickstream", "release", "--release-id", "cli-1")
    assert released.exit_code == 0 and "50 sessions" in released.output
    batch_id = cli_env.clickstream_batches.find_one({"release_id": "cli-1"})["_id"]
    assert batch_id in released.output
    assert batch_id in invoke("clickstream", "release", "--release-id", "cli-1").output  # idempotent
    assert invoke("clickstream", "release").exit_code == 1  # nothing open any more

    listing = invoke("clickstream", "batches")
    assert batch_id in listing.output and "released" in listing.output and "cli-1" in listing.output
    as_json = invoke("clickstream", "batches", "--json")
    assert json.loads(as_json.output)["session_count"] == 50

    exported = tmp_path / "export.jsonl"
    result = invoke("clickstream", "export", batch_id, str(exported))
    assert result.exit_code == 0 and "wrote 50 sessions" in result.output
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [line["session_id"] for line in lines] == [r["session_id"] for r in records]
    assert sum(len(line["events"]) for line in lines) == events
    assert invoke("clickstream", "export", "missing", str(tmp_path / "x.jsonl")).exit_code == 1
