"""uvicorn's logging, with query strings cut from the access log.

A client that wrongly puts a key or a personal query in a URL (``?api_key=…``) must not have it
written to the service log: the access log keeps the path and replaces the query with ``?…``.
Keys sent properly (the ``X-API-Key`` header) are never logged: headers are not in the access log.
"""

from __future__ import annotations

import copy
import logging
from typing import Any


class StripQueryString(logging.Filter):
    """Cut the query string of the path in uvicorn access records (args: client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging config with :class:`StripQueryString` on the access handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["strip_query"] = {"()": f"{__name__}.StripQueryString"}
    config["handlers"]["access"]["filters"] = ["strip_query"]
    return config
