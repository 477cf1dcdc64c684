"""The diagnostic ``probe`` task kind: sleeps ``seconds`` in small steps.

It reports progress, honours cancel between steps, and records each execution in the
``probe_executions`` collection (task id, attempt, pid, ``finished``; ``failed_on`` = ``pg`` or
``mlflow`` when that service ended the attempt) so tests can count how many times a body really
ran. ``refuse`` ends it ``refused``; ``fail_times`` raises an infrastructure error on its first N
attempts. Used by the lifecycle tests, ``clicktune probe``, ``bench/queue_latency.py`` and
``bench/chaos.py``; harmless in production (it touches nothing but its own documents, plus what
the two options below name).

Optional real work against the services a real task depends on:

- ``pg_table``: a connection to the worker's PostgreSQL database (``CLICKTUNE_PG_DSN``, the items
  database of the loaders: the DSN never appears in the task) is opened before the sleep and held
  through it; a few rows of the table are read at the start and again at the end. The table must be
  in ``CLICKTUNE_LOADER_ALLOWED_TABLES``, as for a loader. Errors are sorted by the loaders' rule
  (:func:`loaders.pgsql.classify_pg_error`): a connection killed or refused is
  :class:`~loaders.errors.SourceUnavailableError` (not permanent: the attempt is retried), a table
  that does not exist or is not allowed is :class:`~loaders.errors.SourceConfigError` (permanent:
  refused).
- ``mlflow_experiment``: after the sleep, a run with one metric (``slept_s``) and the task id as a
  tag is logged into that experiment on the worker's MLflow server, through the fine-tuning job's
  retrying client; an unreachable server ends in ``TrackingUnavailable`` (an infrastructure error:
  the attempt is retried).
"""

from __future__ import annotations

import os
import time

from dao.task_documents import utcnow
from worker.lifecycle import TaskContext, TaskRefused

EXECUTIONS = "probe_executions"
PROGRESS_EVERY_S = 0.25
PG_ROWS = 5  # rows read per read
PG_STATEMENT_TIMEOUT_MS = 10_000


class ProbeFailure(RuntimeError):
    """The infrastructure error a probe raises on purpose (``fail_times``)."""


def run(ctx: TaskContext) -> dict:
    task = ctx.task
    executions = ctx.db[EXECUTIONS]
    execution_id = executions.insert_one({
        "task_id": task.id, "attempt": task.attempt, "owner": ctx.owner, "pid": os.getpid(),
        "started_at": utcnow(), "finished": False,
    }).inserted_id
    if task.refuse:
        raise TaskRefused(task.refuse)
    if task.attempt <= task.fail_times:
        raise ProbeFailure(f"diagnostic failure on attempt {task.attempt} (fail_times={task.fail_times})")

    result: dict = {}
    pg = PgReader(task.pg_table, application_name=f"clicktune-probe-{task.id}") if task.pg_table else None
    service = "pg"
    try:
        if pg is not None:
            result["pg_rows_read"] = pg.read()
        start = time.monotonic()
        _sleep(ctx, task.seconds, task.step_s)
        result["slept_s"] = round(time.monotonic() - start, 3)
        if pg is not None:
            result["pg_rows_read"] += pg.read()
        service = "mlflow"
        if task.mlflow_experiment:
            result["mlflow_run_id"] = log_run(ctx, task.mlflow_experiment, result["slept_s"])
    except Exception as exc:
        if _service_error(exc):
            executions.update_one({"_id": execution_id}, {"$set": {"failed_on": service}})
        raise
    finally:
        if pg is not None:
            pg.close()
    executions.update_one({"_id": execution_id}, {"$set": {"finished": True}})
    return {**result, "pid": os.getpid()}


def _sleep(ctx: TaskContext, seconds: float, step_s: float) -> None:
    start = last_report = time.monotonic()
    if seconds > 0:
        ctx.progress("sleeping", 0.0)
    while (elapsed := time.monotonic() - start) < seconds:
        ctx.raise_if_canceled()
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            ctx.progress("sleeping", elapsed / seconds)
            last_report = time.monotonic()
        time.sleep(min(step_s, seconds - elapsed))


def _service_error(exc: BaseException) -> bool:
    from finetuning.experiments.retry import TrackingUnavailable
    from loaders.errors import SourceUnavailableError

    return isinstance(exc, (SourceUnavailableError, TrackingUnavailable))


class PgReader:
    """One read-only connection to the worker's PostgreSQL database, opened at the first read and
    kept until :meth:`close`; each :meth:`read` reads up to :data:`PG_ROWS` rows of ``table``.
    ``application_name`` names the connection in ``pg_stat_activity`` (the task id: a test can end
    exactly this backend)."""

    def __init__(self, table: str, application_name: str = "clicktune-probe") -> None:
        from loaders.errors import Redactor, SourceConfigError
        from loaders.settings import LoaderSettings

        settings = LoaderSettings()
        schema, dot, name = table.partition(".")
        self.schema, self.table = (schema, name) if dot else (None, table)
        if settings.pg_dsn is None:
            raise SourceConfigError("probe pg_table: no database configured (set CLICKTUNE_PG_DSN)")
        settings.check_table(self.schema, self.table, "probe pg_table")
        self._dsn = settings.pg_dsn
        self.redact = Redactor(settings.secret_values())
        self.application_name = application_name[:63]
        self._conn = None

    def read(self) -> int:
        """Rows read; a failure is sorted by :func:`loaders.pgsql.classify_pg_error`."""
        from psycopg2 import sql

        from loaders.errors import SourceConfigError, SourceUnavailableError
        from loaders.pgsql import classify_pg_error

        names = (self.schema, self.table) if self.schema else (self.table,)
        query = sql.SQL("SELECT * FROM {} LIMIT {}").format(sql.Identifier(*names), sql.Literal(PG_ROWS))
        try:
            with self._connection().cursor() as cur:
                cur.execute(query)
                return len(cur.fetchall())
        except Exception as exc:
            kind = classify_pg_error(exc)
            if kind is None:
                raise
            self.close()
            if not kind.retryable:
                raise SourceConfigError(f"probe pg_table: {self.redact.describe(exc)}") from None
            raise SourceUnavailableError(f"probe pg_table read failed: {self.redact.describe(exc)}") from None

    def _connection(self):
        from loaders.pgsql import connect_read_only

        if self._conn is None or self._conn.closed:
            self._conn = connect_read_only(self._dsn.get_secret_value(), connect_timeout_s=5,
                                           statement_timeout_ms=PG_STATEMENT_TIMEOUT_MS,
                                           application_name=self.application_name)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


def log_run(ctx: TaskContext, experiment: str, slept_s: float) -> str:
    """Log a run (metric ``slept_s``, tags task id and attempt) into ``experiment``; its run id."""
    from mlflow.exceptions import MlflowException

    from finetuning.experiments.client import tracking_client
    from finetuning.experiments.retry import TrackingRetryPolicy

    policy = TrackingRetryPolicy(attempts=3, wait_initial=0.5, wait_max=2.0, max_delay_s=10.0)
    client = tracking_client(ctx.settings.mlflow_tracking_uri, policy, should_stop=ctx.should_stop)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        try:
            experiment_id = client.create_experiment(experiment)
        except MlflowException as exc:  # another worker created it first
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    tags = {"clicktune.task_id": ctx.task.id, "clicktune.attempt": str(ctx.task.attempt)}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_metric(run_id, "slept_s", slept_s)
    client.set_terminated(run_id)
    return run_id
