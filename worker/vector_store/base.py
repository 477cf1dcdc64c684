"""The vector-store interface the reindex path writes to and the demo/queries read from.

A *collection* holds one embedding per item, keyed by the item's ``object_id``, with a small
scalar metadata dict per item (the loader meta needed to fetch the item again, stored as JSON by
:mod:`worker.indexing`). Collections are immutable in practice: a reindex writes a *new* collection
and the blue pointer (:mod:`dao.blue_pointer`) is switched to it, so readers never see a half-built
index.

Contract for implementations:

- collection names are validated by :func:`validate_collection_name` (3–512 chars of
  ``[a-zA-Z0-9._-]``, starting and ending with an alphanumeric character — what ChromaDB accepts);
- ``create_collection`` fails with :class:`CollectionExists` when the name is taken (a reindex
  must never write into someone else's collection);
- ``delete_collection`` of a missing collection is a no-op returning ``False`` (cleanup paths call
  it unconditionally);
- ``iter_items`` pages through a collection in a stable order (it is only called on collections
  nobody writes to any more);
- distances returned by ``query`` are cosine distances (``1 - cosine similarity``): smaller is closer.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

#: What ChromaDB accepts, and what we enforce for every store so names stay portable.
COLLECTION_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")

Metadata = Mapping[str, str | int | float | bool]


class VectorStoreError(RuntimeError):
    """A vector-store operation failed (the message never carries credentials)."""


class CollectionExists(VectorStoreError):
    """``create_collection`` was asked for a name that already exists."""


class CollectionNotFound(VectorStoreError):
    """The named collection does not exist."""


def validate_collection_name(name: str) -> str:
    """Return ``name`` if it is a valid collection name, else raise ``ValueError``."""
    if not COLLECTION_NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid collection name {name!r}: need 3-512 characters of [a-zA-Z0-9._-], "
            "starting and ending with a letter or digit, no '..'"
        )
    return name


@dataclass(frozen=True)
class QueryResult:
    """Nearest neighbours for each query row: ``ids[i]`` and ``distances[i]`` are best first."""

    ids: list[list[str]]
    distances: list[list[float]]
    metadatas: list[list[dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class ItemsPage:
    """One page of a collection's items: ids and their metadata, in the same order."""

    ids: list[str]
    metadatas: list[dict[str, Any]]

    def __iter__(self):  # allows ``ids, metas = page``
        return iter((self.ids, self.metadatas))

    def __len__(self) -> int:
        return len(self.ids)


class VectorStore(ABC):
    """A small interface over a vector database (ChromaDB today, see :mod:`worker.vector_store.chroma`)."""

    @abstractmethod
    def create_collection(self, name: str, metadata: Metadata | None = None) -> None:
        """Create an empty cosine-distance collection; raise :class:`CollectionExists` if taken."""

    @abstractmethod
    def collection_metadata(self, name: str) -> dict[str, Any]:
        """The metadata given at creation; raise :class:`CollectionNotFound` if missing."""

    @abstractmethod
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        embeddings: np.ndarray | Sequence[Sequence[float]],
        metadatas: Sequence[Metadata] | None = None,
        documents: Sequence[str] | None = None,
    ) -> None:
        """Insert or replace items (batched internally to the store's maximum batch size)."""

    @abstractmethod
    def count(self, name: str) -> int:
        """Number of items in the collection; raise :class:`CollectionNotFound` if missing."""

    @abstractmethod
    def query(
        self, name: str, embeddings: np.ndarray | Sequence[Sequence[float]], k: int = 10
    ) -> QueryResult:
        """The ``k`` nearest items for each query embedding (cosine distance, best first)."""

    @abstractmethod
    def iter_items(self, name: str, page_size: int = 256) -> Iterator[ItemsPage]:
        """Yield every item of the collection as pages of (ids, metadatas), in a stable order."""

    @abstractmethod
    def delete_collection(self, name: str) -> bool:
        """Drop the collection; ``False`` when it did not exist."""

    @abstractmethod
    def list_collections(self) -> list[str]:
        """Names of all collections."""

    def close(self) -> None:
        """Release client resources (no-op by default)."""

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
