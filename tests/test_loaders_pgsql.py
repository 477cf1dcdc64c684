"""PostgreSQL loaders against the machine's real PostgreSQL server (own schema per test)."""

from __future__ import annotations

import logging
import threading
import time

import psycopg2
import pytest
from psycopg2 import sql
from pydantic import SecretStr

from loaders import (
    ItemMeta,
    LoaderSettings,
    PgsqlMultiTextColumnLoader,
    PgsqlTextLoader,
    PgTextLoaderConfig,
    SourceUnavailableError,
    create_loader,
)
from tests.fixtures.services import PG_DSN

PG_PASSWORD = "pg-pass-never-logged-42"  # trust auth ignores it; it must still never show up anywhere
SETTINGS = LoaderSettings(pg_dsn=SecretStr(f"{PG_DSN} password={PG_PASSWORD}"))


def _admin():
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    return conn


def _create_docs(schema: str, n: int, table: str = "docs", id_type: str = "text") -> None:
    with _admin() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (id {} PRIMARY KEY, title text, body text)").format(
            sql.Identifier(schema, table), sql.SQL(id_type)))
        cur.execute(
            sql.SQL("INSERT INTO {} SELECT i::text::{}, 'Title ' || i, CASE WHEN i %% 50 = 7 THEN NULL ELSE 'body ' || i END "
                    "FROM generate_series(1, %s) AS i").format(sql.Identifier(schema, table), sql.SQL(id_type)),
            (n,),
        )


def test_text_loader_exact_items_and_failures(pg_schema):
    _create_docs(pg_schema, 400)
    wanted = [str(i) for i in range(1, 301)] + [f"missing-{i}" for i in range(20)]
    metas = [ItemMeta(object_id=i) for i in wanted] + [ItemMeta.from_search_result("alias", {"id": "42"})]
    config = PgTextLoaderConfig(table="docs", schema=pg_schema, text_column="body", chunk_size=64)
    with PgsqlTextLoader(config, SETTINGS) as loader:
        result = loader.load(metas)
    nulls = {str(i) for i in range(1, 301) if i % 50 == 7}
    assert result.ids == [i for i in wanted[:300] if i not in nulls] + ["alias"]
    assert all(item.data == f"body {item.id}" for item in result.items[:-1])
    assert result.items[-1].data == "body 42"
    reasons = {f.id: f.reason for f in result.failures}
    assert set(reasons) == nulls | {f"missing-{i}" for i in range(20)}
    assert reasons["missing-3"] == "no row with id = 'missing-3'"
    assert reasons["7"] == "column 'body' is NULL"
    assert not any(f.transient for f in result.failures)
    assert loader.stats.requests == 1 + 5  # the probe + ceil(321 / 64) chunk queries


def test_multi_column_loader_joins_field_lines(pg_schema):
    _create_docs(pg_schema, 60)
    config = {"source": "pg_multi_text", "table": "docs", "schema": pg_schema, "text_columns": ["title", "body"]}
    loader = create_loader(config, SETTINGS)
    assert isinstance(loader, PgsqlMultiTextColumnLoader)
    result = loader.load([ItemMeta(object_id=i) for i in ("5", "7", "404")])
    loader.close()
    assert result.by_id()["5"].data == "title: Title 5\nbody: body 5"
    assert result.by_id()["7"].data == "title: Title 7"  # NULL column left out
    assert [f.id for f in result.failures] == ["404"]


def test_integer_ids_and_ids_the_column_cannot_hold(pg_schema):
    """An integer id column: ids compare as integers; ids that are not integers fail alone (bisection)."""
    _create_docs(pg_schema, 200, id_type="integer")
    wanted = [str(i) for i in range(1, 120)] + ["abc", "1' OR '1'='1", "99999999999999"]
    config = PgTextLoaderConfig(table="docs", schema=pg_schema, text_column="title", chunk_size=50)
    loader = PgsqlTextLoader(config, SETTINGS)
    result = loader.load([ItemMeta(object_id=i) for i in wanted])
    loader.close()
    assert result.ids == [str(i) for i in range(1, 120)]
    assert all(item.data == f"Title {item.id}" for item in result.items)
    reasons = {f.id: f.reason for f in result.failures}
    assert set(reasons) == {"abc", "1' OR '1'='1", "99999999999999"}
    assert all("not valid for column 'id'" in r for r in reasons.values())


def test_hostile_table_and_column_names_are_not_injected(pg_schema):
    table = 'items"; DROP TABLE sentinel; --'
    id_col = "id' OR 1=1 --"
    text_col = 'the "text" column; SELECT pg_sleep(5)'
    with _admin() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(pg_schema, "sentinel")))
        cur.execute(sql.SQL("CREATE TABLE {} ({} text PRIMARY KEY, {} text)").format(
            sql.Identifier(pg_schema, table), sql.Identifier(id_col), sql.Identifier(text_col)))
        cur.execute(sql.SQL("INSERT INTO {} VALUES ('a', 'alpha'), ('b', 'beta'), ('x'' OR ''1''=''1', 'quoted')").format(
            sql.Identifier(pg_schema, table)))
    config = {"source": "pg_text", "schema": pg_schema, "table": table, "id_column": id_col, "text_column": text_col}
    loader = create_loader(config, SETTINGS)
    started = time.monotonic()
    result = loader.load([ItemMeta(object_id=i) for i in ("a", "b", "' OR '1'='1", "x' OR '1'='1", "c")])
    assert time.monotonic() - started < 4  # pg_sleep(5) in a name was never executed
    assert {i.id: i.data for i in result.items} == {"a": "alpha", "b": "beta", "x' OR '1'='1": "quoted"}
    assert sorted(f.id for f in result.failures) == ["' OR '1'='1", "c"]

    # a table name that is SQL but names no table: a clear source error, nothing executed
    evil = create_loader({**config, "table": "sentinel; DROP TABLE sentinel"}, SETTINGS)
    with pytest.raises(SourceUnavailableError, match="UndefinedTable"):
        evil.load([ItemMeta(object_id="a")])
    for each in (loader, evil):
        each.close()
    with _admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f'"{pg_schema}".sentinel',))
        assert cur.fetchone()[0] is not None, "the sentinel table was dropped: injection!"


def test_missing_column_raises_clear_error_without_password(pg_schema, caplog):
    _create_docs(pg_schema, 5)
    caplog.set_level(logging.DEBUG)
    loader = create_loader({"source": "pg_text", "schema": pg_schema, "table": "docs", "text_column": "nope"}, SETTINGS)
    with pytest.raises(SourceUnavailableError) as raised:
        loader.load([ItemMeta(object_id="1")])
    assert "UndefinedColumn" in str(raised.value) and "nope" in str(raised.value)
    assert PG_PASSWORD not in str(raised.value) and PG_PASSWORD not in caplog.text


def test_unreachable_database_raises_without_password(caplog):
    caplog.set_level(logging.DEBUG)
    settings = LoaderSettings(pg_dsn=SecretStr(f"host=127.0.0.1 port=1 dbname=test user=postgres password={PG_PASSWORD}"))
    loader = create_loader({"source": "pg_text", "table": "docs", "text_column": "body", "max_attempts": 2,
                            "backoff_initial_s": 0.01}, settings)
    with pytest.raises(SourceUnavailableError, match="failed after 2 attempts") as raised:
        loader.load([ItemMeta(object_id="1")])
    assert loader.stats.retries == 1
    assert PG_PASSWORD not in str(raised.value) and PG_PASSWORD not in caplog.text


def test_wrong_database_is_a_source_error_not_retried():
    settings = LoaderSettings(pg_dsn=SecretStr("host=127.0.0.1 port=5432 dbname=no_such_db_ct user=postgres"))
    loader = create_loader({"source": "pg_text", "table": "docs", "text_column": "body"}, settings)
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        loader.load([ItemMeta(object_id="1")])
    assert loader.stats.retries == 0


def _hold_lock(schema: str, seconds: float, ready: threading.Event, terminate_app: str | None = None) -> None:
    """Lock the table in another session so the loader's query waits; optionally kill the loader's backend."""
    with _admin() as conn, conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(schema, "docs")))
        ready.set()
        if terminate_app:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # wait until the loader is blocked on our lock, then kill it
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                            (terminate_app,))
                pids = [row[0] for row in cur.fetchall()]
                if pids:
                    cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
                    break
                time.sleep(0.02)
        time.sleep(seconds)
        cur.execute("COMMIT")


def test_backend_terminated_mid_load_is_retried_on_a_new_connection(pg_schema):
    _create_docs(pg_schema, 300)
    config = {"source": "pg_text", "schema": pg_schema, "table": "docs", "text_column": "title",
              "chunk_size": 100, "application_name": "ct-loader-terminate", "backoff_initial_s": 0.05}
    loader = create_loader(config, SETTINGS)
    loader.load([ItemMeta(object_id="1")])  # connected, table probed
    first_pid = loader.backend_pid()
    ready = threading.Event()
    locker = threading.Thread(target=_hold_lock, args=(pg_schema, 0.3, ready, "ct-loader-terminate"))
    locker.start()
    ready.wait(10)
    result = loader.load([ItemMeta(object_id=str(i)) for i in range(1, 301)])
    locker.join(20)
    assert result.failures == [] and len(result.items) == 300
    assert loader.stats.retries >= 1
    assert loader.backend_pid() != first_pid  # reconnected
    loader.close()


def test_statement_timeout_once_is_retried(pg_schema):
    _create_docs(pg_schema, 50)
    config = {"source": "pg_text", "schema": pg_schema, "table": "docs", "text_column": "title",
              "read_timeout_s": 0.4, "backoff_initial_s": 0.3, "backoff_max_s": 1.0}
    loader = create_loader(config, SETTINGS)
    loader.load([ItemMeta(object_id="1")])
    ready = threading.Event()
    locker = threading.Thread(target=_hold_lock, args=(pg_schema, 0.8, ready))
    locker.start()
    ready.wait(10)
    result = loader.load([ItemMeta(object_id=str(i)) for i in range(1, 51)])
    locker.join(20)
    loader.close()
    assert result.failures == [] and len(result.items) == 50
    assert loader.stats.retries >= 1
