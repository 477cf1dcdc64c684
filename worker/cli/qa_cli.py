"""`clicktune` commands for qa (to be filled in by its issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands/groups to the main app."""
