"""What the API's routes work with, built once per app and opened lazily.

Nothing connects when the app is created (``clicktune api --openapi`` and the in-process fuzz tests
build an app without any server); the first request that needs Mongo, Redis or the blue model opens
it. The routes call the same objects the CLI uses: :class:`~dao.clickstream.ClickstreamDAO`,
:class:`~worker.client.ClicktuneClient`, :class:`~dao.blue_pointer.BluePointers` and
:class:`~worker.search.Searcher`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from fastapi import Request
from pymongo.database import Database

from dao.blue_pointer import BluePointers
from dao.clickstream import ClickstreamDAO
from dao.mongo import mongo_database
from worker.api.auth import KeyRing
from worker.metrics import ApiMetrics
from worker.settings import Settings


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeyRing(settings.api_keys, db=lambda: self.db)
        self.metrics = ApiMetrics(db=lambda: self.db)

    @cached_property
    def db(self) -> Database:
        return mongo_database(self.settings.mongo_url, self.settings.mongo_db)

    @cached_property
    def clickstream(self) -> ClickstreamDAO:
        return ClickstreamDAO(self.db)

    @cached_property
    def client(self):
        from worker.client import ClicktuneClient

        return ClicktuneClient(self.settings, db=self.db)

    @cached_property
    def pointers(self) -> BluePointers:
        return BluePointers(self.db)

    @cached_property
    def searcher(self):
        import torch

        from worker.search import Searcher

        torch.set_num_threads(self.settings.api_torch_threads)  # the API process encodes one query at a time
        return Searcher(self.settings, db=self.db)

    @cached_property
    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.settings.redis_url.get_secret_value(), socket_timeout=3)


def services(request: Request) -> Services:
    """FastAPI dependency: the app's :class:`Services`."""
    return request.app.state.services
