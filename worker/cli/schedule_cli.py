"""``clicktune schedule``: release the open batch and enqueue fine-tuning when the policy says so.

    clicktune schedule              # check every CLICKTUNE_SCHEDULE_TICK_S until stopped
    clicktune schedule --once       # one check; prints what it did as JSON
    clicktune schedule --show       # the policy, the last firing, the open batch

See ``worker/scheduler.py`` for the policy and why several instances never double-fire.
"""

from __future__ import annotations

import logging
import signal
import threading

import typer


def schedule(
    once: bool = typer.Option(False, "--once", help="Check once and exit."),
    show: bool = typer.Option(False, "--show", help="Print the policy and state as JSON and exit."),
) -> None:
    """Run the continuous-operation scheduler."""
    from worker.scheduler import Scheduler

    scheduler = Scheduler()
    if show:
        typer.echo(scheduler.view().model_dump_json(indent=2))
        return
    if once:
        typer.echo(scheduler.tick().model_dump_json())
        return
    if not scheduler.config.enabled:
        typer.echo("error: no schedule configured (set CLICKTUNE_SCHEDULE_MODEL_LINE and "
                   "CLICKTUNE_SCHEDULE_EMBEDDING_MODEL_ID)", err=True)
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    scheduler.run(stop, on_tick=lambda outcome: typer.echo(outcome.model_dump_json()))


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)
