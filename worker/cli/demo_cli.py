"""``clicktune demo``: the whole service end to end on embedded defaults (see worker/demo.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from worker.demo import DemoConfig

DEFAULTS = DemoConfig()


def demo(
    dataset: Optional[Path] = typer.Option(None, help="BEIR-layout folder (default: ../shared/data/scifact, "
                                            "else the bundled examples/scifact-slice)."),
    workdir: Path = typer.Option(DEFAULTS.workdir, help="Where every file of the run goes (wiped first)."),
    train_queries: int = typer.Option(DEFAULTS.train_queries, help="Train queries to simulate sessions for."),
    test_queries: int = typer.Option(DEFAULTS.test_queries, help="Test queries to evaluate retrieval on (never trained on)."),
    extra_docs: int = typer.Option(DEFAULTS.extra_docs, help="Unjudged documents added to the corpus as distractors."),
    sessions_per_query: int = typer.Option(DEFAULTS.sessions_per_query, help="Simulated sessions per train query."),
    randomize_share: float = typer.Option(DEFAULTS.randomize_share, min=0.0, max=1.0,
                                          help="Share of sessions the simulated service shows in a random order (exploration)."),
    max_evals: int = typer.Option(DEFAULTS.max_evals, help="Hyperopt trials."),
    max_steps: int = typer.Option(DEFAULTS.max_steps, help="Optimizer steps per trial."),
    broker: str = typer.Option(DEFAULTS.broker, help="auto (Redis when it answers), redis, or stub (in-process)."),
    seed: int = typer.Option(DEFAULTS.seed),
    summary_json: Optional[Path] = typer.Option(None, help="Also write the run's figures (test queries before/after "
                                                 "through the blue index, the gate's decision) to this JSON file."),
) -> None:
    """Simulate clicks, fine-tune with deploy_as_blue, reindex, and show quality before/after."""
    from worker.demo import Demo

    summary = Demo(DemoConfig(dataset=dataset, workdir=workdir, train_queries=train_queries,
                              test_queries=test_queries, extra_docs=extra_docs, sessions_per_query=sessions_per_query,
                              randomize_share=randomize_share, max_evals=max_evals, max_steps=max_steps, broker=broker, seed=seed)).run()
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary, indent=2, default=str))
    ok = summary.get("fine_tuning_status") == "done" and summary.get("reindex_status", "done") == "done"
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(demo)
