"""`clicktune index`, `clicktune reindex` and `clicktune blue`: the blue/green side of the service.

- ``clicktune index --model REF --items-config JSON``: embed items with a model into a new
  collection and make it the blue of a deployment (first deployment; runs in this process).
- ``clicktune reindex --from RUN --to RUN [--wait-on-conflict]``: enqueue a reindex task (the worker
  re-embeds the blue collection with the new model and switches blue when it is complete).
- ``clicktune blue``: which collection and model each deployment serves now.

Model references: ``base:<name>``, ``run:<32 hex>`` (or a bare run id), ``models:/<name>@<alias>``,
``dir:<path>`` (a saved model directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def index(
    model: str = typer.Option(..., "--model", help="Model reference: base:<name>, run:<id>, models:/<name>@<alias>, dir:<path>."),
    items_config: str = typer.Option(..., "--items-config", help="JSON text or a JSON file: "
                                     '{"loader": {...}, "items": [...] | "items_file": PATH | "scan_directory": true}.'),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment name (default: CLICKTUNE_BLUE_POINTER_NAME)."),
    page_size: Optional[int] = typer.Option(None, "--page-size", min=1, help="Items loaded and embedded per page."),
) -> None:
    """Embed items into a new collection and make it blue (the first deployment, or a full rebuild)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dao.blue_pointer import BluePointers
    from dao.mongo import mongo_database
    from finetuning.model_ref import ModelRef
    from worker.cli.items_config import ItemsConfig
    from worker.indexing import build_index
    from worker.settings import get_settings
    from worker.vector_store import create_vector_store

    console = Console()
    settings = get_settings()
    from loaders.errors import SourceConfigError

    try:
        config = ItemsConfig.parse(items_config)
        model_ref = ModelRef.parse(model)
        refs = list(config.iter_items())  # scan_directory: refused outside the allowed roots
    except (ValueError, SourceConfigError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if not refs:
        raise typer.BadParameter("the items config lists no items")
    console.print(f"loading model [bold]{model_ref}[/]")
    embedder = model_ref.load(settings.mlflow_tracking_uri)
    store = create_vector_store(settings)
    pointers = BluePointers(mongo_database(settings.mongo_url, settings.mongo_db))
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        bar = progress.add_task("embedding", total=len(refs))
        result = build_index(
            store=store, pointers=pointers, model=embedder, model_ref=str(model_ref), loader_config=config.loader,
            items=refs, pointer_name=name or settings.blue_pointer_name,
            page_size=page_size or settings.reindex_page_size, total=len(refs),
            on_page=lambda done, total: progress.update(bar, completed=done),
        )
    console.print(f"deployment [bold]{result.pointer}[/] is blue on [bold]{result.collection}[/] "
                  f"({result.item_count} items, model {result.model_ref})")
    if result.previous_collection:
        console.print(f"previous collection {result.previous_collection} "
                      f"{'dropped' if result.old_collection_dropped else 'NOT dropped'}")


def reindex(
    dest: str = typer.Option(..., "--to", help="The new model (e.g. the best run of a fine-tuning task)."),
    source: Optional[str] = typer.Option(None, "--from", help="The blue model to replace (default: the deployment's blue)."),
    source_collection: Optional[str] = typer.Option(None, "--source-collection", help="Or name the blue collection."),
    wait_on_conflict: bool = typer.Option(False, "--wait-on-conflict", help="If a model is locked, wait and retry "
                                          "instead of being refused."),
    idempotency_key: Optional[str] = typer.Option(None, "--idempotency-key"),
) -> None:
    """Enqueue a reindex task: re-embed the blue collection with the new model, then switch blue."""
    from worker.client import ClicktuneClient, InvalidRequest

    request = {"dest_run_id": dest, "source_run_id": source, "source": source_collection,
               "wait_on_conflict": wait_on_conflict, "idempotency_key": idempotency_key}
    try:
        task_id = ClicktuneClient().enqueue_reindex({k: v for k, v in request.items() if v is not None})
    except InvalidRequest as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(task_id)


def blue(
    name: Optional[str] = typer.Option(None, "--name", help="Only this deployment."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    count: bool = typer.Option(True, "--count/--no-count", help="Also count the items in the vector store "
                               "(its directory must exist: CLICKTUNE_CHROMA_PATH)."),
) -> None:
    """Which collection and model each deployment serves now."""
    from rich.console import Console
    from rich.table import Table

    from dao.blue_pointer import BluePointers
    from dao.mongo import mongo_database
    from worker.settings import get_settings
    from worker.vector_store import create_vector_store

    settings = get_settings()
    pointers = BluePointers(mongo_database(settings.mongo_url, settings.mongo_db))
    found = [p for p in pointers.list() if name is None or p.name == name]
    if not found:
        typer.echo("no blue deployment yet (create one with `clicktune index`)", err=True)
        raise typer.Exit(1)
    live: dict[str, int | None] = {}
    if count and not settings.chroma_host and not Path(settings.chroma_path).is_dir():
        # an embedded Chroma client would create an empty store there and report 0 items
        typer.echo(f"error: no Chroma store at CLICKTUNE_CHROMA_PATH ({settings.chroma_path}): the directory does "
                   "not exist; point CLICKTUNE_CHROMA_PATH (or CLICKTUNE_CHROMA_HOST) at the store the index was "
                   "built in, or pass --no-count", err=True)
        raise typer.Exit(1)
    if count:
        store = create_vector_store(settings)
        for pointer in found:
            try:
                live[pointer.name] = store.count(pointer.collection)
            except Exception:
                live[pointer.name] = None
    if as_json:
        rows = [{**p.model_dump(mode="json"), "items_in_store": live.get(p.name)} for p in found]
        typer.echo(json.dumps(rows if name is None else rows[0], indent=2))
        return
    table = Table("deployment", "collection", "model", "items", "version", "updated", "loader")
    for p in found:
        items = f"{p.item_count}" + (f" ({live[p.name]} in store)" if live.get(p.name) is not None else "")
        table.add_row(p.name, p.collection, p.model_ref, items, str(p.version),
                      p.updated_at.strftime("%Y-%m-%d %H:%M:%S"), str(p.loader.get("source", "")))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``index``, ``reindex`` and ``blue`` to the main app."""
    app.command("index")(index)
    app.command("reindex")(reindex)
    app.command("blue")(blue)
