"""The HTTP API of clicktune (``clicktune api``): see :func:`worker.api.app.create_app`."""

from worker.api.app import create_app

__all__ = ["create_app"]
