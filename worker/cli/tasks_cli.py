"""The task commands of ``clicktune``: enqueue, status [--watch], tasks, cancel, restart, probe, worker.

    clicktune enqueue base:all-MiniLM-L6-v2 BATCH --max-evals 4 --idempotency-key nightly-06-01
    clicktune status TASK_ID --watch
    clicktune tasks --status processing
    clicktune cancel TASK_ID
    clicktune restart TASK_ID
    clicktune worker --processes 1 --threads 2
    clicktune probe --seconds 3 --wait
    clicktune probe --pg-table items --mlflow-experiment probes --wait   # also reach PostgreSQL and MLflow

Settings come from ``CLICKTUNE_*`` environment variables (see ``worker/settings.py``).
Exit codes: 0 ok, 1 task not found / not allowed (``status --watch``: the task did not end ``done``),
2 invalid request, 3 a service (MongoDB, Redis, MLflow) cannot be reached (see ``worker/cli/errors.py``).
A refused request is reported by field and reason only: the values given are never echoed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dao.task_documents import TASK_KINDS, TaskDocument, TaskStatus

console = Console()
err_console = Console(stderr=True)

_STATUS_STYLE = {"pending": "yellow", "processing": "cyan", "done": "green", "failed": "red",
                 "refused": "magenta", "canceled": "dim"}


def _client():
    from worker.client import ClicktuneClient

    return ClicktuneClient()


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _task_json(task: TaskDocument) -> str:
    return json.dumps(task.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True)


def _summary(task: TaskDocument) -> str:
    """One line of status, then what the task produced (model, deployed or not, metrics before → after)."""
    style = _STATUS_STYLE.get(task.status.value, "white")
    progress = task.progress.model_dump(exclude_none=True)
    parts = [f"[bold]{task.id}[/bold] {task.kind} [{style}]{task.status.value}[/{style}]",
             f"attempt {task.attempt}/{task.max_attempts}"]
    if progress and not task.terminal:
        parts.append("progress " + ", ".join(f"{k}={v}" for k, v in progress.items()))
    if task.detail:
        parts.append(f"detail: {escape(task.detail)}")
    return "\n".join([" · ".join(parts), *_result_lines(task)])


def _result_lines(task: TaskDocument) -> list[str]:
    result = task.result if isinstance(task.result, dict) else task.result.model_dump(exclude_none=True)
    result = {k: v for k, v in result.items() if v is not None}
    if not result:
        return []
    lines: list[str] = []
    if result.get("registered_model_name"):
        lines.append(f"  model: {result['registered_model_name']} version {result.get('registered_model_version')}"
                     + (f" (run {result['best_run_id']})" if result.get("best_run_id") else ""))
    elif result.get("best_run_id"):
        lines.append(f"  model: run:{result['best_run_id']}")
    if "deployed" in result:
        verdict = "[green]yes[/green]" if result["deployed"] else "[yellow]no[/yellow]"
        reason = f" — {escape(str(result['deploy_reason']))}" if result.get("deploy_reason") else ""
        lines.append(f"  deployed: {verdict}{reason}")
    if result.get("reindex_task_id"):
        lines.append(f"  reindex task: {result['reindex_task_id']}")
    before, after = result.get("metrics_before") or {}, result.get("metrics_after") or {}
    main = result.get("main_metric")
    chose = result.get("quality_metric") or main  # the figure that chose the weights: main or its exploration twin
    names = sorted(set(before) | set(after), key=lambda name: (name != chose, name != main, name))
    for name in names[:8]:
        old, new = before.get(name), after.get(name)
        change = f" ({new - old:+.4f})" if isinstance(old, (int, float)) and isinstance(new, (int, float)) else ""
        label = " (main)" if name == main else " (chose the weights)" if name == chose else ""
        lines.append(f"  {name}{label}: {_number(old)} → {_number(new)}{change}")
    shown = {"registered_model_name", "registered_model_version", "best_run_id", "deployed", "deploy_reason",
             "reindex_task_id", "metrics_before", "metrics_after", "main_metric", "quality_metric"}
    if not lines:  # another kind: its result fields as they are
        lines = [f"  {key}: {escape(str(value))[:120]}" for key, value in result.items() if key not in shown][:12]
    return lines


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def enqueue(
    embedding_model_id: str = typer.Argument(..., help="run:<32 hex>, base:<name> or models:/<name>@<alias>"),
    batch_id: str = typer.Argument(..., help="Clickstream batch to learn from."),
    options: Optional[str] = typer.Option(None, help="FineTuningOptions as JSON (flags below override it)."),
    loader: Optional[str] = typer.Option(None, help="Loader config as JSON."),
    max_evals: Optional[int] = typer.Option(None), num_epochs: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None), max_steps: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None), test_size: Optional[float] = typer.Option(None),
    idempotency_key: Optional[str] = typer.Option(None, help="Same key → same task."),
    deploy_as_blue: bool = typer.Option(False, "--deploy-as-blue", help="Reindex with the new model if it is better."),
    wait_on_conflict: bool = typer.Option(False, "--wait-on-conflict"),
) -> None:
    """Enqueue a fine-tuning task; prints its id."""
    from worker.client import InvalidRequest

    try:
        opts: dict[str, Any] = json.loads(options) if options else {}
        if loader:
            opts["loader"] = json.loads(loader)
    except json.JSONDecodeError as exc:
        _fail(f"--options/--loader is not valid JSON: {exc}", 2)
    if not isinstance(opts, dict):
        _fail("--options must be a JSON object", 2)
    flags = {"max_evals": max_evals, "num_epochs": num_epochs, "batch_size": batch_size,
             "max_steps": max_steps, "seed": seed, "test_size": test_size}
    opts.update({k: v for k, v in flags.items() if v is not None})
    request = {"embedding_model_id": embedding_model_id, "batch_id": batch_id, "options": opts,
               "idempotency_key": idempotency_key, "deploy_as_blue": deploy_as_blue,
               "wait_on_conflict": wait_on_conflict}
    try:
        task_id = _client().enqueue_fine_tuning(request)
    except InvalidRequest as exc:
        _fail(str(exc), 2)
    console.print(task_id, highlight=False)


def status(
    task_id: str,
    kind: Optional[str] = typer.Option(None, help="Task kind (searched in all kinds if omitted)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow live progress until the task ends."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole document as JSON."),
    interval: float = typer.Option(0.5, help="Refresh interval of --watch, seconds."),
) -> None:
    """Show a task's status and result: the model, whether it was deployed, metrics before and after.

    With --watch: live progress until the task ends."""
    from worker.client import TaskNotFound

    client = _client()
    try:
        kind, task = client.find(task_id, kind)
    except TaskNotFound:
        _fail(f"no task {task_id}")
    if watch and not task.terminal:
        task = _watch(client, kind, task, interval)
    if as_json:
        console.print_json(_task_json(task))
    else:
        console.print(_summary(task), highlight=False)
    if watch and task.status is not TaskStatus.done:
        raise typer.Exit(1)


def _watch(client, kind: str, task: TaskDocument, interval: float) -> TaskDocument:
    bar = Progress(TextColumn("{task.fields[status]}"), TextColumn("{task.description}"), BarColumn(),
                   TaskProgressColumn(), TimeElapsedColumn(), console=console, transient=True)
    row = bar.add_task(task.progress.stage or "waiting", total=1.0, completed=0.0, status=task.status.value)
    with Live(bar, console=console, refresh_per_second=8):
        while not task.terminal:
            fraction = task.progress.fraction
            bar.update(row, description=task.progress.stage or task.status.value,
                       completed=fraction or 0.0, total=1.0 if fraction is not None else None,
                       status=task.status.value)
            time.sleep(interval)
            task = client.status(task.id, kind)
    return task


def tasks(
    status_: Optional[list[TaskStatus]] = typer.Option(None, "--status", help="Only these statuses (repeatable)."),
    kind: Optional[str] = typer.Option(None, help=f"One of {sorted(TASK_KINDS)}."),
    limit: int = typer.Option(20),
    as_json: bool = typer.Option(False, "--json", help="Print the documents as JSON."),
    wide: bool = typer.Option(False, "--wide", help="Whole details and start/finish times, no width limit."),
) -> None:
    """List tasks, newest first (whole task ids)."""
    if kind and kind not in TASK_KINDS:
        _fail(f"unknown kind {kind!r}; known: {sorted(TASK_KINDS)}", 2)
    found = _client().list_tasks(kind=kind, status=status_ or None, limit=limit)
    if as_json:
        console.print_json(json.dumps([t.model_dump(mode="json", by_alias=True) for t in found]))
        return
    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=32)  # whole ids: they are what the other commands take
    for name in ("kind", "status", "attempt", "created", *(("started", "finished") if wide else ()), "stage", "detail"):
        table.add_column(name, no_wrap=name != "detail", overflow="fold")
    for task in found:
        style = _STATUS_STYLE.get(task.status.value, "white")
        times = [t.strftime("%Y-%m-%d %H:%M:%S") if t else "" for t in (task.started_at, task.finished_at)] if wide else []
        table.add_row(task.id, task.kind, f"[{style}]{task.status.value}[/{style}]",
                      f"{task.attempt}/{task.max_attempts}", task.created_at.strftime("%Y-%m-%d %H:%M:%S"), *times,
                      task.progress.stage or "", escape((task.detail or "") if wide else (task.detail or "")[:60]))
    (Console(width=max(console.width, 240)) if wide else console).print(table)


def cancel(task_id: str, kind: Optional[str] = typer.Option(None)) -> None:
    """Cancel a task: pending → canceled now; running → stops within one heartbeat."""
    from worker.client import TaskNotFound

    try:
        task = _client().cancel(task_id, kind)
    except TaskNotFound:
        _fail(f"no task {task_id}")
    if task.status is TaskStatus.processing:
        console.print(f"{task_id}: cancel requested; the job stops within one heartbeat", highlight=False)
    else:
        console.print(f"{task_id}: {task.status.value}", highlight=False)


def restart(task_id: str, kind: Optional[str] = typer.Option(None)) -> None:
    """Enqueue a new attempt of a finished task (prints the new task id)."""
    from dao.tasks import TaskStateError
    from worker.client import TaskNotFound

    try:
        console.print(_client().restart(task_id, kind), highlight=False)
    except TaskNotFound:
        _fail(f"no task {task_id}")
    except TaskStateError as exc:
        _fail(str(exc))


def probe(
    seconds: float = typer.Option(1.0, help="How long the diagnostic task sleeps."),
    idempotency_key: Optional[str] = typer.Option(None),
    wait: bool = typer.Option(False, "--wait", help="Watch it until it ends."),
    pg_table: Optional[str] = typer.Option(None, help="Also read a few rows of this table of the workers' "
                                           "PostgreSQL database (CLICKTUNE_PG_DSN; the table must be allowed)."),
    mlflow_experiment: Optional[str] = typer.Option(None, help="Also log a one-metric run into this MLflow experiment."),
) -> None:
    """Enqueue a diagnostic probe task (sleeps, reports progress, honours cancel)."""
    services = {name: value for name, value in (("pg_table", pg_table), ("mlflow_experiment", mlflow_experiment)) if value}
    task_id = _client().enqueue_probe(seconds, idempotency_key=idempotency_key, **services)
    console.print(task_id, highlight=False)
    if wait:
        status(task_id, kind="probe", watch=True, as_json=False, interval=0.25)


_DRAMATIQ_MAIN = ("import sys; from worker.logs import configure_logging; configure_logging(wrap_streams=False); "
                  "from dramatiq.cli import main; sys.exit(main())")


def worker(
    processes: int = typer.Option(1, help="Worker processes."),
    threads: int = typer.Option(2, help="Threads per process (concurrent tasks per process)."),
    queues: Optional[list[str]] = typer.Option(None, "--queue", help="Only these queues (repeatable)."),
) -> None:
    """Run a worker: Dramatiq processes serving every task kind, with the CLICKTUNE_* settings.

    Log lines name the task they belong to; CLICKTUNE_LOG_FORMAT=json writes one JSON object a line."""
    # Dramatiq's own logging setup is skipped: the main process configures ours (worker/logs.py: text or
    # JSON, redaction) before Dramatiq starts, the worker processes inherit it and worker.actors adds the rest.
    cmd = [sys.executable, "-c", _DRAMATIQ_MAIN, "--skip-logging", "worker.actors", "--processes", str(processes),
           "--threads", str(threads)]
    if queues:
        cmd += ["--queues", *queues]
    from worker.monitoring import worker_prometheus_env
    from worker.settings import get_settings

    os.environ.update(worker_prometheus_env(get_settings()))  # Dramatiq's metrics server reads it
    os.execv(sys.executable, cmd)


def register(app: typer.Typer) -> None:
    """Add the task commands to the main app."""
    app.command()(enqueue)
    app.command()(status)
    app.command()(tasks)
    app.command()(cancel)
    app.command()(restart)
    app.command()(probe)
    app.command()(worker)


def standalone_app() -> typer.Typer:
    """Only these commands (``python -m worker.cli.tasks_cli``), without the other areas' imports."""
    from worker.cli.errors import new_app

    app = new_app(help="clicktune task commands", no_args_is_help=True)
    register(app)
    return app


if __name__ == "__main__":  # pragma: no cover
    standalone_app()()
