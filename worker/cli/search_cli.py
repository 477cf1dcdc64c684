"""``clicktune search QUERY``: the top k of a deployment's blue collection — what ``POST /v1/search`` answers.

    clicktune search "protein folding in yeast" --k 5
    clicktune search "protein folding" --json
"""

from __future__ import annotations

from typing import Optional

import typer


def search(
    query: str = typer.Argument(..., help="The search text."),
    k: int = typer.Option(10, "--k", "-k", min=1, help="How many results."),
    deployment: Optional[str] = typer.Option(None, help="Blue pointer name (default: CLICKTUNE_BLUE_POINTER_NAME)."),
    as_json: bool = typer.Option(False, "--json", help="Print the response as JSON (the API's body)."),
) -> None:
    """Embed QUERY with the blue model and print the nearest items of the blue collection."""
    from pydantic import ValidationError
    from rich.console import Console
    from rich.table import Table

    from worker.search import NoBlueDeployment, Searcher, SearchRequest

    try:
        request = SearchRequest(query=query, k=k, deployment=deployment)
    except ValidationError as exc:
        raise typer.BadParameter(exc.errors()[0]["msg"]) from None
    try:
        response = Searcher().search(request)
    except NoBlueDeployment as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(response.model_dump_json(indent=2))
        return
    table = Table("rank", "object_id", "distance", "meta",
                  title=f"{response.deployment}: {response.collection} ({response.model_ref}, v{response.version})")
    for hit in response.results:
        table.add_row(str(hit.rank), hit.object_id, f"{hit.distance:.4f}", str(hit.meta)[:60])
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
