"""``clicktune`` clickstream commands and the click simulator.

    clicktune clickstream import sessions.jsonl          # validate + store, rich progress, rejects summary
    clicktune clickstream release --release-id nightly-2024-05-01
    clicktune clickstream batches
    clicktune clickstream export BATCH_ID out.jsonl
    clicktune simulate-clicks --dataset shared/data/scifact --split train --top-k 10 \\
        --sessions-per-query 1 --seed 0 --ranker bm25 --out sessions.jsonl
    clicktune simulate-clicks --dataset shared/data/scifact --click-model dbn --click-param gamma=0.7 \\
        --popularity zipf --out sessions.jsonl

Mongo comes from ``CLICKTUNE_MONGO_URL`` / ``CLICKTUNE_MONGO_DB`` (``worker/settings.py``); the URL
is a secret and is never printed. JSONL format: see docs/clickstream.md.
Exit codes: 0 ok, 1 not found / nothing to do / some records rejected (import), 2 invalid input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

MAX_REJECTS_SHOWN = 20


def _dao():
    from dao.clickstream import ClickstreamDAO
    from dao.mongo import mongo_database
    from worker.settings import get_settings

    settings = get_settings()
    return ClickstreamDAO(mongo_database(settings.mongo_url, settings.mongo_db))


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def import_file(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL: one session (with events) or event a line."),
    chunk_size: int = typer.Option(1000, min=1, help="Records validated and written per round trip."),
) -> None:
    """Validate and store sessions and events; prints accepted counts and the rejects (by line).

    The file is read as bytes, line by line: a line that is not UTF-8, not JSON, too long or too
    deep is rejected on its own and the lines after it are still imported."""
    from array import array

    from dao.clickstream_validation import count_jsonl_records, iter_jsonl

    dao = _dao()
    with file.open("rb") as handle:
        total = count_jsonl_records(handle)
    line_numbers = array("Q")  # record index -> 1-based line number in the file (blank lines skipped)

    def records() -> Iterator[Any]:
        with file.open("rb") as handle:
            for number, value in iter_jsonl(handle, dao.limits):
                line_numbers.append(number)
                yield value

    with Progress(
        TextColumn("[bold]importing[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("import", total=total)
        report = dao.ingest(records(), chunk_size=chunk_size, on_progress=lambda n: progress.advance(task, n))
    rejected_records = len({index for index, _ in report.rejects})
    console.print(
        f"sessions: [green]{report.accepted_sessions} accepted[/green], {report.duplicate_sessions} already stored · "
        f"events: [green]{report.accepted_events} accepted[/green], {report.duplicate_events} already stored · "
        f"[{'red' if report.rejects else 'green'}]{len(report.rejects)} rejected[/] "
        f"(in {rejected_records} of {len(line_numbers)} records)",
        highlight=False,
    )
    if report.batch_ids:
        console.print(f"open batch: {', '.join(report.batch_ids)}", highlight=False)
    if report.rejects:
        table = Table("line", "reason", title="rejected records")
        for index, reason in report.rejects[:MAX_REJECTS_SHOWN]:
            table.add_row(str(line_numbers[index]), escape(reason))
        console.print(table)
        if len(report.rejects) > MAX_REJECTS_SHOWN:
            console.print(f"… and {len(report.rejects) - MAX_REJECTS_SHOWN} more", highlight=False)
        raise typer.Exit(1)


def release(
    release_id: Optional[str] = typer.Option(None, help="Idempotency key: the same id always names the same batch."),
) -> None:
    """Release the open batch (idempotent per --release-id); prints its id."""
    batch = _dao().release(release_id)
    if batch is None:
        _fail("no open batch to release")
    console.print(
        f"released batch [bold]{batch.batch_id}[/bold] (release id {batch.release_id}): "
        f"{batch.session_count} sessions, {batch.event_count} events",
        highlight=False,
    )


def batches(as_json: bool = typer.Option(False, "--json", help="One JSON object a line instead of a table.")) -> None:
    """List batches, oldest first."""
    found = _dao().list_batches()
    if as_json:
        for batch in found:
            console.print_json(json.dumps(batch.model_dump(mode="json", exclude={"writers"})))
        return
    table = Table()
    for column in ("batch_id", "status", "release_id", "sessions", "events", "created_at", "released_at"):
        table.add_column(column, overflow="fold")
    for batch in found:
        table.add_row(
            batch.batch_id,
            batch.status.value,
            batch.release_id or "",
            str(batch.session_count),
            str(batch.event_count),
            batch.created_at.isoformat(timespec="seconds"),
            batch.released_at.isoformat(timespec="seconds") if batch.released_at else "",
        )
    console.print(table)


def export(
    batch_id: str = typer.Argument(..., help="Batch to export."),
    file: Path = typer.Argument(..., dir_okay=False, help="Output JSONL (re-importable)."),
) -> None:
    """Write a batch's sessions with their events as JSONL."""
    try:
        count = _dao().export_batch(batch_id, file)
    except KeyError as error:
        _fail(str(error.args[0]))
    console.print(f"wrote {count} sessions to {file}", highlight=False)


def simulate_clicks(
    dataset: Path = typer.Option(..., exists=True, file_okay=False, help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)."),
    out: Path = typer.Option(..., dir_okay=False, help="Output JSONL of sessions (the import format)."),
    split: str = typer.Option("train", help="Query split; anything but 'train' needs --allow-test."),
    top_k: int = typer.Option(10, min=1, help="Results shown per session."),
    sessions_per_query: int = typer.Option(1, min=1, help="Sessions per query with --popularity uniform."),
    seed: int = typer.Option(0),
    ranker: str = typer.Option("bm25", help="bm25, or embedding (needs --model)."),
    model: Optional[Path] = typer.Option(None, help="Model directory (clicktune or sentence-transformers) for the embedding ranker."),
    max_queries: Optional[int] = typer.Option(None, min=1, help="Use only the first N judged queries of the split."),
    max_docs: Optional[int] = typer.Option(None, min=1, help="Keep judged docs + random others up to N."),
    meta_template: str = typer.Option('{"path": "{object_id}.json"}', help="JSON template of each result's meta."),
    allow_test: bool = typer.Option(False, "--allow-test", help="Allow a held-out split (evaluation/demo only)."),
    embeddings_cache: Optional[Path] = typer.Option(None, help="Cache file for document embeddings (embedding ranker)."),
    click_model: str = typer.Option(
        "pbm", help="Simulated user: pbm, cascade, dbn, ubm, trust-bias, misleading, dbn-misleading (finetuning/simulation/registry.py)."
    ),
    click_param: list[str] = typer.Option([], help="NAME=VALUE parameter of the click model (repeatable), e.g. gamma=0.7."),
    popularity: str = typer.Option("uniform", help="Sessions per query: uniform (--sessions-per-query each) or zipf (a long tail)."),
    popularity_param: list[str] = typer.Option([], help="NAME=VALUE parameter of the popularity (repeatable), e.g. exponent=1.5."),
    dwell: str = typer.Option("none", help="How long users stay on clicked results, as the log shows it: none, timestamps "
                                           "(events spaced by it) or reported (also each click's meta.dwell_seconds)."),
    randomize_share: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of sessions that show the top k in a random order "
                                                                      "(exploration, search_meta.randomized)."),
) -> None:
    """Simulate search sessions with clicks from a BEIR data set (position-based users by default)."""
    from finetuning.datasets import BeirDataset
    from finetuning.simulation import (
        BM25Ranker, EmbeddingRanker, HeldOutSplitError, check_split, click_statistics, make_click_model, make_dwell,
        make_popularity, parse_params, simulate_sessions, write_jsonl,
    )

    try:
        check_split(split, allow_test)
    except HeldOutSplitError as error:
        _fail(str(error), 2)
    try:
        user = make_click_model(click_model, seed=seed, **parse_params(click_param))
        query_popularity = None
        if popularity != "uniform" or popularity_param:
            if sessions_per_query != 1:
                _fail("--sessions-per-query is for --popularity uniform without --popularity-param", 2)
            query_popularity = make_popularity(popularity, **parse_params(popularity_param))
        dwell_model = make_dwell(dwell)
    except (KeyError, TypeError, ValueError) as error:
        _fail(f"{error.args[0] if error.args else error}", 2)
    try:
        template = json.loads(meta_template)
    except json.JSONDecodeError as error:
        _fail(f"--meta-template is not JSON: {error.msg}", 2)
    data = BeirDataset.load(dataset, max_docs=max_docs, seed=seed)
    if split not in data.splits:
        _fail(f"split {split!r} not in {data.splits}", 2)
    # train sessions never include a query judged in (or worded as) a test query
    split_ids = data.training_query_ids() if split == "train" else data.query_ids(split)
    query_ids = split_ids[:max_queries] if max_queries else split_ids
    if ranker == "bm25":
        engine = BM25Ranker(data.doc_texts())
    elif ranker == "embedding":
        if model is None:
            _fail("--ranker embedding needs --model", 2)
        engine = EmbeddingRanker(_load_encoder(model), data.doc_texts(), cache_path=embeddings_cache, name=f"embedding:{model.name}")
    else:
        _fail(f"unknown ranker {ranker!r} (bm25, embedding)", 2)
    n_queries = len(query_ids) if query_ids is not None else len(data.query_ids(split))
    try:
        with Progress(TextColumn("[bold]simulating[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("simulate", total=n_queries)
            sessions = simulate_sessions(
                data, split=split, ranker=engine, top_k=top_k, sessions_per_query=sessions_per_query, seed=seed,
                query_ids=query_ids, meta_template=template, allow_test=allow_test, click_model=user,
                popularity=query_popularity, dwell=dwell_model, randomize_share=randomize_share, on_query=lambda done: progress.update(task, completed=done),
            )
    except HeldOutSplitError as error:
        _fail(str(error), 2)
    write_jsonl(sessions, out)
    stats = click_statistics(sessions, data)
    console.print(
        f"wrote {stats['sessions']} sessions ({stats['clicks']} clicks, click precision {stats['click_precision']:.2f}, "
        f"{stats['irrelevant_share']:.0%} without clicks) to {out}",
        highlight=False,
    )
    if query_popularity is not None:
        per_query: dict[str, int] = {}
        for session in sessions:
            query_id = session["search_meta"]["query_id"]
            per_query[query_id] = per_query.get(query_id, 0) + 1
        seen_once = sum(count == 1 for count in per_query.values()) / len(per_query) if per_query else 0.0
        console.print(
            f"{popularity}: {len(per_query)} queries, {seen_once:.0%} seen once "
            f"(expected {query_popularity.share_seen_once():.0%}), at most {max(per_query.values(), default=0)} sessions",
            highlight=False,
        )


def _load_encoder(model: Path) -> Any:
    """A clicktune model directory (``clicktune_model.json``) or a sentence-transformers one."""
    if (model / "clicktune_model.json").exists():
        from finetuning.models.registry import load_model

        return load_model(model)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model), device="cpu")


def register(app: typer.Typer) -> None:
    """Add ``clickstream`` (import, release, batches, export) and ``simulate-clicks``."""
    clickstream_app = typer.Typer(help="Import, release, list and export clickstream batches.", no_args_is_help=True)
    clickstream_app.command("import")(import_file)
    clickstream_app.command("release")(release)
    clickstream_app.command("batches")(batches)
    clickstream_app.command("export")(export)
    app.add_typer(clickstream_app, name="clickstream")
    app.command("simulate-clicks")(simulate_clicks)
