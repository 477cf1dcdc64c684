"""The loader interface: ``load(metas) -> LoadResult``.

A loader fetches the items a clickstream refers to. ``load`` never raises because one item is missing
or broken: such items come back in ``LoadResult.failures`` with a reason. It raises
:class:`~loaders.errors.SourceUnavailableError` only when the source itself is unusable (bad
credentials, a missing bucket or table, unreachable after retries), with a message free of secrets.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Iterator, Sequence

from loaders.downloaded_item import DownloadedItem, LoadResult
from loaders.errors import ItemLoadError
from loaders.item_meta import ItemMeta


@dataclass
class LoadStats:
    """Counters of the loader's last ``load`` call (for logs, tests and benchmarks)."""

    requested: int = 0
    loaded: int = 0
    failed: int = 0
    requests: int = 0  # calls made to the source (GETs, conditional GETs, metadata reads, SQL queries)
    retries: int = 0
    cache_hits: int = 0  # served from the cache without downloading the bytes (incl. 304 Not Modified)
    bytes_downloaded: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **counts: int | float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def unique_metas(metas: Sequence[ItemMeta]) -> list[ItemMeta]:
    """The metas with repeated ``object_id`` dropped (first occurrence kept, order kept)."""
    seen: set[str] = set()
    unique = []
    for meta in metas:
        if meta.object_id not in seen:
            seen.add(meta.object_id)
            unique.append(meta)
    return unique


class ItemsLoader(ABC):
    """Fetches items from one source. Use as a context manager or call :meth:`close`.

    ``source`` names the kind of source (the config's ``source`` value); ``stats`` describes the last
    :meth:`load` call.
    """

    source: str = "abstract"

    def __init__(self) -> None:
        self.stats = LoadStats()

    @abstractmethod
    def load(self, metas: Sequence[ItemMeta]) -> LoadResult:
        """Fetch every distinct item; items keep the order of ``metas``; per-item failures are reported."""

    def load_one(self, meta: ItemMeta) -> DownloadedItem:
        """Fetch one item; raises :class:`ItemLoadError` when it failed (and ``SourceUnavailableError``)."""
        result = self.load([meta])
        if result.failures:
            raise ItemLoadError(result.failures[0])
        return result.items[0]

    def iter_pages(self, metas: Sequence[ItemMeta], page_size: int = 1000) -> Iterator[LoadResult]:
        """Load ``metas`` page by page (bounded memory for large reindexes); one result per page."""
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        for start in range(0, len(metas), page_size):
            yield self.load(metas[start : start + page_size])

    def close(self) -> None:
        """Release connections and thread pools. Safe to call twice."""

    def __enter__(self) -> "ItemsLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
