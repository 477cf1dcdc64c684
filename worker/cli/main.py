"""The ``clicktune`` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import typer

from worker.cli import (api_cli, clickstream_cli, demo_cli, images_cli, qa_cli, reindex_cli, schedule_cli,
                        search_cli, tasks_cli)

app = typer.Typer(help="clicktune: fine-tune embedding models from search clickstream.", no_args_is_help=True)

for module in (tasks_cli, clickstream_cli, qa_cli, images_cli, reindex_cli, demo_cli, api_cli, search_cli,
               schedule_cli):
    module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
