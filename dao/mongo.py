"""MongoDB connections: one place that turns a (secret) URL into a database handle.

``dao`` does not know the service settings (it never imports ``worker``): callers pass the URL
(``settings.mongo_url`` as a :class:`~pydantic.SecretStr` or a plain string) and the database name.
Clients are cached per (URL, process id): pymongo clients are thread-safe but not fork-safe.
"""

from __future__ import annotations

import os
import threading

from pydantic import SecretStr
from pymongo import MongoClient
from pymongo.database import Database

_clients: dict[tuple[str, int], MongoClient] = {}
_lock = threading.Lock()


def mongo_client(url: SecretStr | str, *, server_selection_timeout_ms: int = 10_000) -> MongoClient:
    """A shared, timezone-aware client for ``url`` (UTC datetimes come back aware)."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    key = (raw, os.getpid())
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = MongoClient(raw, tz_aware=True, serverSelectionTimeoutMS=server_selection_timeout_ms,
                                 appname="clicktune")
            _clients[key] = client
        return client


def mongo_database(url: SecretStr | str, name: str) -> Database:
    """The database ``name`` on the server at ``url``."""
    return mongo_client(url)[name]


def close_clients() -> None:
    """Close every cached client of this process (tests, shutdown)."""
    with _lock:
        for (_, pid), client in list(_clients.items()):
            if pid == os.getpid():
                client.close()
        _clients.clear()
