"""ChromaDB 1.5 implementation of :class:`~worker.vector_store.base.VectorStore`.

Two ways to reach Chroma, same behaviour:

- ``ChromaVectorStore.persistent(path)``: the embedded ``chromadb.PersistentClient`` (SQLite +
  HNSW files in a directory) — the default for the demo, tests and single-machine installs. Several
  processes may open the same directory; a collection written by one is visible to the others.
- ``ChromaVectorStore.http(host, port, ssl=False, auth_token=None)``: ``chromadb.HttpClient`` to a
  Chroma server (``chroma run`` / the ``chromadb/chroma`` image) — production and docker-compose.

Collections are created with ``embedding_function=None`` (we always pass embeddings; Chroma must
never try to download its default ONNX model) and cosine space (``configuration={"hnsw":
{"space": "cosine"}}``). Writes are split into chunks of the client's ``get_max_batch_size()``.
Telemetry is off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from worker.vector_store.base import (
    CollectionExists,
    CollectionNotFound,
    ItemsPage,
    Metadata,
    QueryResult,
    VectorStore,
    VectorStoreError,
    validate_collection_name,
)

log = logging.getLogger(__name__)

_COSINE = {"hnsw": {"space": "cosine"}}


def _as_matrix(embeddings: Any) -> np.ndarray:
    """Tensor / array / nested lists → 2-D float32 numpy array."""
    if hasattr(embeddings, "detach"):  # a torch tensor, possibly on a GPU
        embeddings = embeddings.detach().cpu().numpy()
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {matrix.shape}")
    return matrix


class ChromaVectorStore(VectorStore):
    """A :class:`VectorStore` over any ``chromadb`` client (embedded or HTTP).

    Parameters:
        client: a ``chromadb`` ``ClientAPI`` (use :meth:`persistent` or :meth:`http` to build one).
        description: a secret-free label for logs and errors (e.g. the path or ``host:port``).
    """

    def __init__(self, client: Any, description: str = "chroma") -> None:
        self._client = client
        self.description = description
        try:
            self._max_batch = max(1, int(client.get_max_batch_size()))
        except Exception:  # older servers may not expose it
            self._max_batch = 1000

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def persistent(cls, path: str | Path) -> "ChromaVectorStore":
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        path = Path(path).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
        return cls(client, description=f"chroma embedded at {path}")

    @classmethod
    def http(cls, host: str, port: int = 8000, ssl: bool = False, auth_token: str | None = None) -> "ChromaVectorStore":
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else None
        client = chromadb.HttpClient(
            host=host, port=port, ssl=ssl, headers=headers, settings=ChromaSettings(anonymized_telemetry=False)
        )
        return cls(client, description=f"chroma server at {host}:{port}")

    # --- helpers -----------------------------------------------------------------------------
    def _get(self, name: str):
        from chromadb.errors import NotFoundError

        try:
            return self._client.get_collection(name, embedding_function=None)
        except NotFoundError as exc:
            raise CollectionNotFound(f"collection {name!r} does not exist in {self.description}") from exc
        except ValueError as exc:  # some client versions raise ValueError for a missing collection
            if "does not exist" in str(exc):
                raise CollectionNotFound(f"collection {name!r} does not exist in {self.description}") from exc
            raise

    # --- VectorStore -------------------------------------------------------------------------
    def create_collection(self, name: str, metadata: Metadata | None = None) -> None:
        validate_collection_name(name)
        if name in self.list_collections():
            raise CollectionExists(f"collection {name!r} already exists in {self.description}")
        try:
            self._client.create_collection(
                name, metadata=dict(metadata) if metadata else None, configuration=_COSINE, embedding_function=None
            )
        except Exception as exc:
            if "already exists" in str(exc):
                raise CollectionExists(f"collection {name!r} already exists in {self.description}") from exc
            raise

    def collection_metadata(self, name: str) -> dict[str, Any]:
        return dict(self._get(name).metadata or {})

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        embeddings: Any,
        metadatas: Sequence[Metadata] | None = None,
        documents: Sequence[str] | None = None,
    ) -> None:
        ids = [str(i) for i in ids]
        matrix = _as_matrix(embeddings)
        if len(ids) != matrix.shape[0]:
            raise ValueError(f"{len(ids)} ids but {matrix.shape[0]} embeddings")
        if metadatas is not None and len(metadatas) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(metadatas)} metadatas")
        if documents is not None and len(documents) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(documents)} documents")
        if not ids:
            return
        collection = self._get(name)
        for start in range(0, len(ids), self._max_batch):
            stop = start + self._max_batch
            collection.upsert(
                ids=ids[start:stop],
                embeddings=matrix[start:stop],
                metadatas=[dict(m) for m in metadatas[start:stop]] if metadatas is not None else None,
                documents=list(documents[start:stop]) if documents is not None else None,
            )

    def count(self, name: str) -> int:
        return int(self._get(name).count())

    def query(self, name: str, embeddings: Any, k: int = 10) -> QueryResult:
        matrix = _as_matrix(embeddings)
        collection = self._get(name)
        result = collection.query(query_embeddings=matrix, n_results=k, include=["distances", "metadatas"])
        return QueryResult(
            ids=[list(row) for row in result["ids"]],
            distances=[[float(d) for d in row] for row in (result.get("distances") or [])],
            metadatas=[[dict(m or {}) for m in row] for row in (result.get("metadatas") or [])],
        )

    def iter_items(self, name: str, page_size: int = 256) -> Iterator[ItemsPage]:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        collection = self._get(name)
        offset = 0
        while True:
            page = collection.get(limit=page_size, offset=offset, include=["metadatas"])
            ids = list(page["ids"])
            if not ids:
                return
            metadatas = [dict(m or {}) for m in (page.get("metadatas") or [{}] * len(ids))]
            yield ItemsPage(ids, metadatas)
            if len(ids) < page_size:
                return
            offset += len(ids)

    def delete_collection(self, name: str) -> bool:
        try:
            self._get(name)
        except CollectionNotFound:
            return False
        try:
            self._client.delete_collection(name)
        except Exception as exc:
            if "does not exist" in str(exc):
                return False
            raise VectorStoreError(f"could not delete collection {name!r} in {self.description}: {exc}") from exc
        return True

    def list_collections(self) -> list[str]:
        return sorted(c if isinstance(c, str) else c.name for c in self._client.list_collections())
