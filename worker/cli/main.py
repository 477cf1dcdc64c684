"""The ``clicktune`` command line. Each area registers its commands from its own module.

A command that cannot reach MongoDB, Redis or MLflow ends with one line naming the setting to check
(exit status 3, see ``worker/cli/errors.py``); ``clicktune --version`` prints the installed version.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Optional

import typer

from worker.cli import (api_cli, clickstream_cli, demo_cli, images_cli, qa_cli, reindex_cli, schedule_cli,
                        search_cli, tasks_cli)
from worker.cli.errors import new_app

app = new_app(help="clicktune: fine-tune embedding models from search clickstream.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"clicktune {version('clicktune')}")
        except PackageNotFoundError:  # running from a source tree that is not installed
            typer.echo("clicktune (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Optional[bool] = typer.Option(None, "--version", callback=_print_version, is_eager=True,
                                                help="Print the installed version and exit."),
) -> None:
    """clicktune: fine-tune embedding models from search clickstream.

    Settings come from CLICKTUNE_* environment variables (for example CLICKTUNE_MONGO_URL,
    CLICKTUNE_REDIS_URL, CLICKTUNE_MLFLOW_TRACKING_URI).
    """


for module in (tasks_cli, clickstream_cli, qa_cli, images_cli, reindex_cli, demo_cli, api_cli, search_cli,
               schedule_cli):
    module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
