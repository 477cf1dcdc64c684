"""The outcome of a load: the items that arrived and, per item, why the others did not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loaders.item_meta import ItemMeta


@dataclass
class DownloadedItem:
    """One fetched item. ``data`` is decoded by the loader: ``str``, ``dict`` (JSON), ``PIL.Image`` or bytes."""

    id: str
    data: Any
    meta: ItemMeta


@dataclass(frozen=True)
class LoadFailure:
    """An item that could not be loaded.

    ``transient`` is True when the cause may go away by itself (a timeout, a 5xx, throttling) and the
    loader gave up only after its retries; False for a permanent cause (missing object, undecodable
    bytes, an id the source cannot hold). ``reason`` never contains secrets.
    """

    id: str
    reason: str
    transient: bool = False


@dataclass
class LoadResult:
    """Items in the order their metas were given (one per distinct ``object_id``) plus failures."""

    items: list[DownloadedItem] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    @property
    def failed_ids(self) -> list[str]:
        return [failure.id for failure in self.failures]

    def by_id(self) -> dict[str, DownloadedItem]:
        return {item.id: item for item in self.items}

    def extend(self, other: "LoadResult") -> "LoadResult":
        """Append another result (e.g. the next page) in place and return self."""
        self.items.extend(other.items)
        self.failures.extend(other.failures)
        return self

    def __len__(self) -> int:
        return len(self.items)
