"""Permanent vs transient loader errors at the source, the operator's allow-lists, and malformed
item locations kept per item — against a real temp directory, the machine's PostgreSQL, moto and
the GCS emulator."""

from __future__ import annotations

import json
import os
import time

import psycopg2
import pytest
from psycopg2 import sql
from pydantic import SecretStr

from loaders import ItemMeta, LoaderSettings, SourceConfigError, SourceUnavailableError, create_loader
from tests.fixtures.loaders import gcs_settings, s3_settings
from tests.fixtures.services import PG_DSN


def _settings(**allow) -> LoaderSettings:
    values = {"loader_allowed_roots": [], "loader_allowed_buckets": [], "loader_allowed_tables": []}
    values.update(allow)
    return LoaderSettings(**values)


@pytest.fixture
def items_dir(tmp_path):
    root = tmp_path / "items"
    root.mkdir()
    for i in range(20):
        (root / f"{i}.json").write_text(json.dumps({"title": f"T{i}", "text": f"text {i}"}))
    (root / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    return root


# ------------------------------------------------------------------------------------ local files
def test_a_malformed_path_fails_its_item_only(items_dir):
    hostile = {
        "nul": "3.json\x00.txt",
        "surrogate": "\ud800.json",
        "too-long": "a/" * 3000 + "x.json",
        "long-name": "n" * 300 + ".json",
        "not-text": {"nested": "3.json"},
        "deep-json": "deep.json",
        "escape": "../../etc/hostname",
        "absolute": "/etc/hostname",
    }
    metas = [ItemMeta.from_search_result(str(i), {"path": f"{i}.json"}) for i in range(20)]
    metas += [ItemMeta.from_search_result(name, {"path": path}) for name, path in hostile.items()]
    with create_loader({"source": "local_file", "root_dir": str(items_dir)}, _settings(loader_allowed_roots=[str(items_dir)])) as loader:
        result = loader.load(metas)
    assert result.ids == [str(i) for i in range(20)]
    reasons = {failure.id: failure.reason for failure in result.failures}
    assert set(reasons) == set(hostile)
    assert "NUL" in reasons["nul"] and "invalid Unicode" in reasons["surrogate"]
    assert "over the limit" in reasons["too-long"] and "component" in reasons["long-name"]
    assert "not a string" in reasons["not-text"] and "nested too deeply" in reasons["deep-json"]
    assert "outside the loader's root" in reasons["escape"] and "outside the loader's root" in reasons["absolute"]
    assert not any(failure.transient for failure in result.failures)


def test_a_root_outside_the_allow_list_is_a_permanent_error(items_dir, tmp_path):
    allowed = _settings(loader_allowed_roots=[str(items_dir)])
    (items_dir / "sub").mkdir()
    assert create_loader({"source": "local_file", "root_dir": str(items_dir / "sub")}, allowed).root == items_dir / "sub"
    (items_dir / "way-out").symlink_to("/etc")
    for root in ("/", "/etc", str(tmp_path), str(items_dir / ".." / ".."), str(items_dir / "way-out")):
        with pytest.raises(SourceConfigError, match="CLICKTUNE_LOADER_ALLOWED_ROOTS") as raised:
            create_loader({"source": "local_file", "root_dir": root}, allowed)
        assert raised.value.permanent is True
    with pytest.raises(SourceConfigError, match="it is empty"):
        create_loader({"source": "local_file", "root_dir": str(items_dir)}, _settings())


def test_the_allow_list_comes_from_the_environment(items_dir, monkeypatch):
    monkeypatch.setenv("CLICKTUNE_LOADER_ALLOWED_ROOTS", f"/nonexistent,{items_dir}")
    monkeypatch.setenv("CLICKTUNE_LOADER_ALLOWED_TABLES", '["public.docs", "reports.*"]')
    settings = LoaderSettings()
    assert settings.loader_allowed_roots == ["/nonexistent", str(items_dir)]
    assert settings.loader_allowed_tables == ["public.docs", "reports.*"]
    assert create_loader({"source": "local_file", "root_dir": str(items_dir)}).root == items_dir


def test_a_root_that_is_not_a_directory_is_a_permanent_error(items_dir):
    settings = _settings(loader_allowed_roots=[str(items_dir)])
    for root in (items_dir / "3.json", items_dir / "missing"):
        with pytest.raises(SourceConfigError, match="is not a directory") as raised:
            create_loader({"source": "local_file", "root_dir": str(root)}, settings)
        assert raised.value.permanent


# ------------------------------------------------------------------------------------ PostgreSQL
def _docs_table(schema: str) -> None:
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, body text)").format(sql.Identifier(schema, "docs")))
        cur.execute(sql.SQL("INSERT INTO {} SELECT i::text, 'body ' || i FROM generate_series(1, 10) AS i").format(
            sql.Identifier(schema, "docs")))
    conn.close()


def _pg(schema: str, **allow) -> LoaderSettings:
    return _settings(pg_dsn=SecretStr(PG_DSN), loader_allowed_tables=[f"{schema}.*"], **allow)


@pytest.mark.parametrize("config", [
    {"table": "no_such_table", "text_column": "body"},
    {"table": "docs", "text_column": "no_such_column"},
    {"table": "docs", "text_column": "body", "id_column": "no_such_id"},
])
def test_a_missing_table_or_column_is_refused_at_once(pg_schema, config):
    _docs_table(pg_schema)
    loader = create_loader({"source": "pg_text", "schema": pg_schema, "max_attempts": 5, "backoff_initial_s": 1, **config},
                           _pg(pg_schema))
    started = time.monotonic()
    with pytest.raises(SourceConfigError) as raised:
        loader.load([ItemMeta(object_id="1")])
    assert raised.value.permanent is True and loader.stats.retries == 0 and time.monotonic() - started < 1.0
    missing = next(v for k, v in config.items() if v.startswith("no_such"))
    assert missing in str(raised.value) and ("UndefinedTable" in str(raised.value) or "UndefinedColumn" in str(raised.value))
    loader.close()


def test_a_table_outside_the_allow_list_is_refused(pg_schema):
    _docs_table(pg_schema)
    config = {"source": "pg_text", "schema": pg_schema, "table": "docs", "text_column": "body"}
    for allowed in ([], ["public.*"], ["docs"], [f"{pg_schema}.other"]):
        with pytest.raises(SourceConfigError, match="CLICKTUNE_LOADER_ALLOWED_TABLES"):
            create_loader(config, _settings(pg_dsn=SecretStr(PG_DSN), loader_allowed_tables=allowed))
    for allowed in ([f"{pg_schema}.docs"], [f"{pg_schema}.*"], ["*"]):
        with create_loader(config, _settings(pg_dsn=SecretStr(PG_DSN), loader_allowed_tables=allowed)) as loader:
            assert loader.load([ItemMeta(object_id="2")]).items[0].data == "body 2"


def test_an_id_postgres_cannot_take_fails_its_item_only(pg_schema):
    _docs_table(pg_schema)
    metas = [ItemMeta(object_id=str(i)) for i in range(1, 6)]
    metas += [ItemMeta.from_search_result("nul", {"id": "3\x00"}), ItemMeta.from_search_result("sur", {"id": "\udc80"}),
              ItemMeta.from_search_result("long", {"id": "9" * 5000})]
    with create_loader({"source": "pg_text", "schema": pg_schema, "table": "docs", "text_column": "body"}, _pg(pg_schema)) as loader:
        result = loader.load(metas)
    assert result.ids == ["1", "2", "3", "4", "5"]
    reasons = {failure.id: failure.reason for failure in result.failures}
    assert "NUL" in reasons["nul"] and "Unicode" in reasons["sur"] and "over the limit" in reasons["long"]


def test_no_database_configured_is_permanent_and_unreachable_is_not(pg_schema):
    with pytest.raises(SourceConfigError, match="CLICKTUNE_PG_DSN"):
        create_loader({"source": "pg_text", "table": "docs", "text_column": "body"}, _settings(loader_allowed_tables=["*"]))
    dead = _settings(pg_dsn=SecretStr("host=127.0.0.1 port=1 dbname=test user=postgres"), loader_allowed_tables=["*"])
    loader = create_loader({"source": "pg_text", "table": "docs", "text_column": "body", "max_attempts": 2,
                            "backoff_initial_s": 0.01}, dead)
    with pytest.raises(SourceUnavailableError) as raised:
        loader.load([ItemMeta(object_id="1")])
    assert type(raised.value) is SourceUnavailableError and raised.value.permanent is False


# ------------------------------------------------------------------------------------ buckets
def test_s3_missing_bucket_is_permanent_and_buckets_follow_the_allow_list(moto_server, s3_bucket):
    bucket, admin = s3_bucket
    admin.put_object(Bucket=bucket, Key="1", Body=b"one")
    base = s3_settings(moto_server.url)
    settings = base.model_copy(update={"loader_allowed_buckets": [bucket, "no-such-bucket-ct"]})
    missing = create_loader({"source": "s3_text", "bucket": "no-such-bucket-ct", "max_attempts": 5}, settings, cache=None)
    with pytest.raises(SourceConfigError, match="NoSuchBucket") as raised:
        missing.load([ItemMeta(object_id="1")])
    assert raised.value.permanent and missing.stats.retries == 0
    missing.close()
    with pytest.raises(SourceConfigError, match="CLICKTUNE_LOADER_ALLOWED_BUCKETS"):
        create_loader({"source": "s3_text", "bucket": "other-bucket"}, settings, cache=None)
    # without a configured bucket, each item's meta bucket is checked on its own
    with create_loader({"source": "s3_text"}, settings, cache=None) as loader:
        result = loader.load([ItemMeta.from_search_result("ok", {"bucket": bucket, "key": "1"}),
                              ItemMeta.from_search_result("elsewhere", {"bucket": "private", "key": "1"}),
                              ItemMeta.from_search_result("nul", {"bucket": bucket, "key": "1\x00"})])
    assert result.ids == ["ok"] and result.items[0].data == "one"
    reasons = {failure.id: failure.reason for failure in result.failures}
    assert "CLICKTUNE_LOADER_ALLOWED_BUCKETS" in reasons["elsewhere"] and "NUL" in reasons["nul"]


def test_gcs_missing_bucket_is_permanent(gcs_emulator):
    settings = gcs_settings(gcs_emulator.url).model_copy(update={"loader_allowed_buckets": ["*"]})
    loader = create_loader({"source": "gcs_text", "bucket": "no-such-bucket-ct"}, settings, cache=None)
    with pytest.raises(SourceConfigError, match="does not exist") as raised:
        loader.load([ItemMeta(object_id="1")])
    assert raised.value.permanent
    loader.close()
    with pytest.raises(SourceConfigError, match="ALLOWED_BUCKETS"):
        create_loader({"source": "gcs_text", "bucket": "b"}, gcs_settings(gcs_emulator.url).model_copy(
            update={"loader_allowed_buckets": []}), cache=None)


def test_env_allow_lists_reach_worker_processes():
    """The test harness sets the operator's lists before any test runs (tests/fixtures/loaders.py)."""
    assert os.environ["CLICKTUNE_LOADER_ALLOWED_ROOTS"] and LoaderSettings().loader_allowed_roots
