"""What the API's routes work with, built once per app and opened lazily.

Nothing connects when the app is created (``clicktune api --openapi`` and the in-process fuzz tests
build an app without any server); the first request that needs Mongo, Redis or the blue model opens
it. The routes call the same objects the CLI uses: :class:`~dao.clickstream.ClickstreamDAO`,
:class:`~worker.client.ClicktuneClient`, :class:`~dao.blue_pointer.BluePointers` and
:class:`~worker.search.Searcher`.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any, Callable, TypeVar

from fastapi import Request
from pymongo.database import Database

from dao.blue_pointer import BluePointers
from dao.clickstream import ClickstreamDAO
from dao.mongo import mongo_database
from worker.api.auth import KeyRing
from worker.metrics import ApiMetrics
from worker.settings import Settings


T = TypeVar("T")
_build_lock = threading.RLock()


def _once(build: Callable[["Services"], T]) -> cached_property:
    """A cached property built under a lock: concurrent first requests (the server's threads) build
    one DAO, one client, one searcher — not one each (a searcher loads a model)."""

    def locked(self: "Services") -> T:
        with _build_lock:
            if build.__name__ not in self.__dict__:
                self.__dict__[build.__name__] = build(self)
            return self.__dict__[build.__name__]

    locked.__name__ = build.__name__
    locked.__doc__ = build.__doc__
    return cached_property(locked)


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeyRing(settings.api_keys, db=lambda: self.db)
        self.metrics = ApiMetrics(db=lambda: self.db)

    @_once
    def db(self) -> Database:
        return mongo_database(self.settings.mongo_url, self.settings.mongo_db)

    @_once
    def clickstream(self) -> ClickstreamDAO:
        return ClickstreamDAO(self.db)

    @_once
    def client(self):
        from worker.client import ClicktuneClient

        return ClicktuneClient(self.settings, db=self.db)

    @_once
    def pointers(self) -> BluePointers:
        return BluePointers(self.db)

    @_once
    def searcher(self):
        import torch

        from worker.search import Searcher

        torch.set_num_threads(self.settings.api_torch_threads)  # the API process encodes one query at a time
        return Searcher(self.settings, db=self.db)

    @_once
    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.settings.redis_url.get_secret_value(), socket_timeout=3)


def services(request: Request) -> Services:
    """FastAPI dependency: the app's :class:`Services`."""
    return request.app.state.services
