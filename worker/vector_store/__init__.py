"""Vector stores behind a small interface (:class:`VectorStore`); ChromaDB is the implementation.

:func:`create_vector_store` picks the client from settings: ``chroma_host`` set → HTTP client to a
Chroma server; otherwise the embedded persistent client at ``chroma_path``.
"""

from __future__ import annotations

from typing import Any

from worker.vector_store.base import (
    CollectionExists,
    CollectionNotFound,
    ItemsPage,
    QueryResult,
    VectorStore,
    VectorStoreError,
    validate_collection_name,
)
from worker.vector_store.chroma import ChromaVectorStore

__all__ = [
    "ChromaVectorStore",
    "CollectionExists",
    "CollectionNotFound",
    "ItemsPage",
    "QueryResult",
    "VectorStore",
    "VectorStoreError",
    "create_vector_store",
    "validate_collection_name",
]


def create_vector_store(settings: Any) -> VectorStore:
    """Build the configured store from a :class:`worker.settings.Settings`-like object.

    Reads ``chroma_host``, ``chroma_port``, ``chroma_ssl``, ``chroma_auth_token`` (SecretStr) and
    ``chroma_path``.
    """
    host = getattr(settings, "chroma_host", None)
    if host:
        token = getattr(settings, "chroma_auth_token", None)
        if token is not None and hasattr(token, "get_secret_value"):
            token = token.get_secret_value()
        return ChromaVectorStore.http(
            host,
            int(getattr(settings, "chroma_port", 8000)),
            ssl=bool(getattr(settings, "chroma_ssl", False)),
            auth_token=token or None,
        )
    return ChromaVectorStore.persistent(getattr(settings, "chroma_path", ".clicktune/chroma"))
