"""PostgreSQL rows as item text: one column (:class:`PgsqlTextLoader`) or several
(:class:`PgsqlMultiTextColumnLoader`, ``"field: value"`` lines).

Reads are batched: ``chunk_size`` ids per query, passed as ONE array parameter and joined on the id
column (``FROM unnest(%s::text[]) AS r(requested) JOIN table t ON t.id = r.requested::<id type>``, the
same index-friendly read as ``WHERE id = ANY(%s)``, but every row comes back tagged with the exact id
string the caller asked for, whatever the column's type — ``integer``, ``uuid``, ``text``). Table, schema
and column names are composed with ``psycopg2.sql.Identifier`` only; the id type comes from the catalog
(``format_type``), never from the config.

Errors are never swallowed: transient ones (connection lost, ``pg_terminate_backend``, statement timeout,
serialization/deadlock, too many connections) are retried with backoff on a fresh connection; an id the
column cannot hold (``invalid input syntax for type integer``) is isolated by bisecting its chunk and
reported for that item alone; anything else (missing table or column, privileges, bad credentials) and
transient errors that outlive their retries raise :class:`SourceUnavailableError`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import abstractmethod
from typing import Any, Sequence

from loaders.base import ItemsLoader, LoadStats, unique_metas
from loaders.config import PgMultiTextLoaderConfig, PgTextLoaderConfig, _PgConfigBase
from loaders.downloaded_item import DownloadedItem, LoadFailure, LoadResult
from loaders.errors import ErrorKind, ItemProblem, Redactor, SourceConfigError, SourceUnavailableError
from loaders.item_meta import ItemMeta
from loaders.retry import call_with_retries
from loaders.settings import LoaderSettings

logger = logging.getLogger("clicktune.loaders")

_TRANSIENT_SQLSTATES = frozenset({
    "57P01",  # admin_shutdown (pg_terminate_backend, server restart)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up)
    "57014",  # query_canceled (statement_timeout)
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
})
_CONNECT_SOURCE_MARKERS = (
    "authentication failed", "does not exist", "no pg_hba.conf entry", "permission denied",
    "password must be", "invalid dsn", "invalid connection option", "missing \"=\"",
)


MAX_ID_BYTES = 1024


def _id_problem(row_id: str) -> str | None:
    """Why ``row_id`` cannot be sent as a query parameter at all (a per-item failure), or None."""
    if "\x00" in row_id:
        return "id contains a NUL byte (PostgreSQL text cannot hold one)"
    try:
        size = len(row_id.encode("utf-8"))
    except UnicodeError:
        return "id is not valid Unicode"
    if size > MAX_ID_BYTES:
        return f"id is {size} bytes, over the limit of {MAX_ID_BYTES}"
    return None


class PgConnectError(Exception):
    """Connecting failed (kept apart from query errors: libpq reports these without a SQLSTATE)."""


def classify_pg_error(exc: BaseException) -> ErrorKind | None:
    """Sort a psycopg2 exception (see :mod:`loaders.errors`); ``None`` for anything else."""
    import psycopg2

    if isinstance(exc, PgConnectError):
        message = str(exc).lower()
        return ErrorKind.SOURCE if any(m in message for m in _CONNECT_SOURCE_MARKERS) else ErrorKind.UNREACHABLE
    if isinstance(exc, psycopg2.Error):
        code = exc.pgcode or ""
        if code in _TRANSIENT_SQLSTATES or code.startswith(("08", "53")):
            return ErrorKind.TRANSIENT
        if code.startswith("22"):  # data exception: an id the column's type cannot hold
            return ErrorKind.ITEM
        if not code and isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return ErrorKind.TRANSIENT  # connection lost / closed: no SQLSTATE from the client side
        return ErrorKind.SOURCE  # undefined table/column, privileges, syntax: the config or server is wrong
    return None


def connect_read_only(dsn: str, *, connect_timeout_s: float, statement_timeout_ms: int, application_name: str):
    """A read-only autocommit psycopg2 connection with connect and statement timeouts; a refused or
    failed connect is :class:`PgConnectError` (its text only: the DSN stays out of the traceback)."""
    import psycopg2

    try:
        conn = psycopg2.connect(dsn, connect_timeout=max(2, math.ceil(connect_timeout_s)), application_name=application_name,
                                options=f"-c statement_timeout={statement_timeout_ms}")
    except psycopg2.OperationalError as exc:
        raise PgConnectError(str(exc).strip()) from None
    conn.set_session(readonly=True, autocommit=True)
    return conn


class _PgsqlLoaderBase(ItemsLoader):
    """Shared engine: connection (lazy, read-only, autocommit, timeouts), probe, chunked reads, retries."""

    def __init__(self, config: _PgConfigBase, settings: LoaderSettings | None = None, cache: Any = None) -> None:
        super().__init__()
        settings = settings or LoaderSettings()
        if settings.pg_dsn is None:
            raise SourceConfigError(f"{config.source}: no database configured (set CLICKTUNE_PG_DSN)")
        settings.check_table(config.db_schema, config.table, config.source)
        self.source = config.source
        self.config = config
        self._dsn = settings.pg_dsn
        self.redact = Redactor(settings.secret_values())
        self.retry = config.retry_policy()
        self._conn = None
        self._id_type: str | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def _columns(self) -> list[str]:
        """The text columns to read."""

    @abstractmethod
    def _row_text(self, values: tuple) -> str:
        """The item text from the row's column values; :class:`ItemProblem` when there is none."""

    # -- connection ----------------------------------------------------------------------------------
    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect_read_only(self._dsn.get_secret_value(), connect_timeout_s=self.config.connect_timeout_s,
                                           statement_timeout_ms=int(self.config.read_timeout_s * 1000),
                                           application_name=self.config.application_name)
        return self._conn

    def _drop_connection(self, retried: BaseException | None = None) -> None:
        """Close the connection (the next query reconnects); counts a retry when called for one."""
        if retried is not None:
            self.stats.add(retries=1)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def backend_pid(self) -> int | None:
        """The server process id of the open connection (``None`` when not connected)."""
        return self._conn.get_backend_pid() if self._conn is not None and not self._conn.closed else None

    # -- SQL -----------------------------------------------------------------------------------------
    def _table(self):
        from psycopg2 import sql

        if self.config.db_schema:
            return sql.Identifier(self.config.db_schema, self.config.table)
        return sql.Identifier(self.config.table)

    def _probe(self) -> str:
        """Check table and columns exist (zero rows read) and return the id column's type name."""
        from psycopg2 import sql

        self.stats.add(requests=1)
        query = sql.SQL("SELECT {id}, {cols} FROM {table} WHERE false").format(
            id=sql.Identifier(self.config.id_column),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in self._columns()),
            table=self._table(),
        )
        with self._connection().cursor() as cur:
            cur.execute(query)
            type_oid = cur.description[0].type_code
            cur.execute("SELECT format_type(%s, NULL)", (type_oid,))
            return cur.fetchone()[0]

    def _select(self, ids: list[str]) -> list[tuple]:
        from psycopg2 import sql

        if self._id_type is None:
            self._id_type = self._probe()
        query = sql.SQL(
            "SELECT r.requested, {cols} FROM unnest(%s::text[]) AS r(requested) "
            "JOIN {table} AS t ON t.{id} = r.requested::{id_type}"
        ).format(
            cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in self._columns()),
            table=self._table(),
            id=sql.Identifier(self.config.id_column),
            id_type=sql.SQL(self._id_type),  # from pg_catalog's format_type (quoted by the server), not user input
        )
        self.stats.add(requests=1)
        with self._connection().cursor() as cur:
            cur.execute(query, (ids,))
            return cur.fetchall()

    def _select_with_retries(self, ids: list[str]) -> list[tuple]:
        return call_with_retries(
            lambda: self._select(ids),
            classify_pg_error,
            self.retry,
            self.redact,
            what=f"{self.source} query of {len(ids)} ids",
            on_retry=self._drop_connection,
        )

    def _read_chunk(self, ids: list[str], rows: dict[str, tuple], bad: dict[str, str]) -> None:
        """Read ``ids`` into ``rows``; ids the column cannot hold go to ``bad`` (found by bisection)."""
        try:
            found = self._select_with_retries(ids)
        except Exception as exc:
            kind = classify_pg_error(exc)
            if kind is None:
                raise
            if kind is ErrorKind.ITEM:
                if len(ids) == 1:
                    bad[ids[0]] = f"id not valid for column {self.config.id_column!r}: {self.redact.describe(exc)}"
                    return
                middle = len(ids) // 2
                self._read_chunk(ids[:middle], rows, bad)
                self._read_chunk(ids[middle:], rows, bad)
                return
            self._drop_connection()
            if kind is ErrorKind.SOURCE:
                raise SourceConfigError(f"{self.source} source is unusable: {self.redact.describe(exc)}") from None
            raise SourceUnavailableError(
                f"{self.source} source failed after {self.retry.max_attempts} attempts: {self.redact.describe(exc)}"
            ) from None
        for row in found:
            rows.setdefault(row[0], row[1:])  # a non-unique id column: the first row wins

    # -- ItemsLoader ---------------------------------------------------------------------------------
    def load(self, metas: Sequence[ItemMeta]) -> LoadResult:
        unique = unique_metas(metas)
        with self._lock:
            self.stats = stats = LoadStats(requested=len(unique))
            started = time.perf_counter()
            row_ids = [str(meta.get("id", meta.object_id)) for meta in unique]
            bad: dict[str, str] = {row_id: problem for row_id in row_ids if (problem := _id_problem(row_id))}
            wanted = [row_id for row_id in dict.fromkeys(row_ids) if row_id not in bad]
            rows: dict[str, tuple] = {}
            for start in range(0, len(wanted), self.config.chunk_size):
                self._read_chunk(wanted[start : start + self.config.chunk_size], rows, bad)
        result = LoadResult()
        for meta, row_id in zip(unique, row_ids):
            if row_id in bad:
                result.failures.append(LoadFailure(meta.object_id, bad[row_id]))
            elif row_id not in rows:
                result.failures.append(LoadFailure(meta.object_id, f"no row with {self.config.id_column} = {row_id!r}"))
            else:
                try:
                    result.items.append(DownloadedItem(meta.object_id, self._row_text(rows[row_id]), meta))
                except ItemProblem as exc:
                    result.failures.append(LoadFailure(meta.object_id, str(exc)))
        stats.add(loaded=len(result.items), failed=len(result.failures), seconds=time.perf_counter() - started)
        logger.info(
            "%s: loaded %d/%d rows, %d failed, %d queries, %d retries, %.2fs",
            self.source, stats.loaded, stats.requested, stats.failed, stats.requests, stats.retries, stats.seconds,
        )
        return result

    def close(self) -> None:
        with self._lock:
            self._drop_connection()


class PgsqlTextLoader(_PgsqlLoaderBase):
    """Item text = one column (``config.text_column``); a NULL is a per-item failure."""

    config: PgTextLoaderConfig

    def __init__(self, config: PgTextLoaderConfig, settings: LoaderSettings | None = None, cache: Any = None) -> None:
        super().__init__(config, settings, cache)

    def _columns(self) -> list[str]:
        return [self.config.text_column]

    def _row_text(self, values: tuple) -> str:
        if values[0] is None:
            raise ItemProblem(f"column {self.config.text_column!r} is NULL")
        return str(values[0])


class PgsqlMultiTextColumnLoader(_PgsqlLoaderBase):
    """Item text = one ``"column: value"`` line per non-NULL column of ``config.text_columns``, in order."""

    config: PgMultiTextLoaderConfig

    def __init__(self, config: PgMultiTextLoaderConfig, settings: LoaderSettings | None = None, cache: Any = None) -> None:
        super().__init__(config, settings, cache)

    def _columns(self) -> list[str]:
        return list(self.config.text_columns)

    def _row_text(self, values: tuple) -> str:
        lines = [f"{name}: {value}" for name, value in zip(self.config.text_columns, values) if value is not None]
        if not lines:
            raise ItemProblem("every text column is NULL")
        return self.config.line_separator.join(lines)
