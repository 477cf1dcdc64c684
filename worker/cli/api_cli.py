"""``clicktune api`` (the HTTP service) and ``clicktune api-key`` (make and hash API keys).

    clicktune api --port 8080                  # uvicorn, settings from CLICKTUNE_*
    clicktune api --openapi > openapi.json     # print the OpenAPI document, start nothing
    clicktune api-key new --name frontend --scope search --scope ingest [--store]
    clicktune api-key hash                     # reads a key on stdin, prints its SHA-256

A key is printed once by ``api-key new`` and never stored: the service keeps its hash
(``CLICKTUNE_API_KEYS`` or, with ``--store``, the ``api_keys`` collection).
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer


def api(
    host: Optional[str] = typer.Option(None, help="Bind address (default: CLICKTUNE_API_HOST)."),
    port: Optional[int] = typer.Option(None, help="Port (default: CLICKTUNE_API_PORT)."),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    openapi: bool = typer.Option(False, "--openapi", help="Print the OpenAPI document (JSON) and exit."),
) -> None:
    """Serve the HTTP API (clickstream, tasks, search, health, metrics)."""
    from worker.api import create_app
    from worker.settings import get_settings

    settings = get_settings()
    if openapi:
        typer.echo(json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True))
        return
    import uvicorn

    from worker.api.access_log import log_config

    host = host or settings.api_host
    port = port or settings.api_port
    if workers > 1:
        uvicorn.run("worker.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, proxy_headers=True, log_config=log_config())
    else:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, proxy_headers=True,
                    log_config=log_config())


def key_new(
    name: str = typer.Option(..., help="A name for people and logs (never the key)."),
    scope: list[str] = typer.Option(..., "--scope", help="ingest, tasks, search or admin (repeatable)."),
    store: bool = typer.Option(False, "--store", help="Store the hash in the api_keys collection."),
) -> None:
    """Make a random key; print it (once) and the settings entry holding its hash."""
    from worker.api.auth import ApiKeyRecord, Scope, hash_key, new_key, store_key

    try:
        scopes = {Scope(s) for s in scope}
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}; scopes: {[s.value for s in Scope]}") from None
    key = new_key()
    record = ApiKeyRecord(name=name, sha256=hash_key(key), scopes=scopes)
    if store:
        from dao.mongo import mongo_database
        from worker.settings import get_settings

        settings = get_settings()
        store_key(mongo_database(settings.mongo_url, settings.mongo_db), name, scopes, key)
    typer.echo(f"key (shown once): {key}")
    entry = {"name": record.name, "sha256": record.sha256, "scopes": sorted(s.value for s in scopes)}
    typer.echo(f"CLICKTUNE_API_KEYS entry: {json.dumps(entry)}")


def key_hash() -> None:
    """Read a key from stdin and print its SHA-256 (what CLICKTUNE_API_KEYS holds)."""
    from worker.api.auth import hash_key

    key = sys.stdin.readline().strip()
    if not key:
        raise typer.BadParameter("no key on stdin")
    typer.echo(hash_key(key))


def register(app: typer.Typer) -> None:
    """Add ``api`` and ``api-key`` (new, hash)."""
    app.command("api")(api)
    keys = typer.Typer(help="Make and hash API keys.", no_args_is_help=True)
    keys.command("new")(key_new)
    keys.command("hash")(key_hash)
    app.add_typer(keys, name="api-key")
