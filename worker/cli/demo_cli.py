"""``clicktune demo``: the whole service end to end on embedded defaults (see worker/demo.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo(
    dataset: Optional[Path] = typer.Option(None, help="BEIR-layout folder (default: ../shared/data/scifact, "
                                            "else the bundled examples/scifact-slice)."),
    workdir: Path = typer.Option(Path(".clicktune/demo"), help="Where every file of the run goes (wiped first)."),
    train_queries: int = typer.Option(80, help="Train queries to simulate sessions for."),
    test_queries: int = typer.Option(50, help="Test queries to evaluate retrieval on (never trained on)."),
    sessions_per_query: int = typer.Option(3, help="Simulated sessions per train query."),
    max_evals: int = typer.Option(2, help="Hyperopt trials."),
    max_steps: int = typer.Option(40, help="Optimizer steps per trial."),
    broker: str = typer.Option("auto", help="auto (Redis when it answers), redis, or stub (in-process)."),
    seed: int = typer.Option(0),
) -> None:
    """Simulate clicks, fine-tune with deploy_as_blue, reindex, and show quality before/after."""
    from worker.demo import Demo, DemoConfig

    summary = Demo(DemoConfig(dataset=dataset, workdir=workdir, train_queries=train_queries,
                              test_queries=test_queries, sessions_per_query=sessions_per_query,
                              max_evals=max_evals, max_steps=max_steps, broker=broker, seed=seed)).run()
    ok = summary.get("fine_tuning_status") == "done" and summary.get("reindex_status", "done") == "done"
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(demo)
