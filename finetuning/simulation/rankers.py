"""Rankers that turn a query into the top-k corpus documents: the "search engine" whose result
pages the click simulator shows.

A ranker has ``name``, ``doc_ids`` and ``rank_many(queries, top_k) -> [[(doc_id, score), ...]]``
(best first). Two implementations:

- :class:`BM25Ranker` (``finetuning/simulation/bm25.py``): lexical Okapi BM25, no model needed.
- :class:`EmbeddingRanker`: cosine (or dot) similarity of embeddings from any encoder — a
  callable ``list[str] -> Tensor | ndarray``, an ``EmbeddingsModelInterface`` (``encode_queries``
  / ``encode_items``) or a sentence-transformers model (``encode``). Document embeddings are
  computed once, can be passed in precomputed (``doc_embeddings=``) and can be cached on disk
  (``cache_path=``, keyed by the document ids so a changed corpus is re-encoded).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from finetuning.simulation.bm25 import BM25Ranker

RankedList = list[tuple[str, float]]


@runtime_checkable
class Ranker(Protocol):
    """What :func:`finetuning.simulation.simulate_sessions` needs from a search engine."""

    name: str

    def rank_many(self, queries: Sequence[str], top_k: int) -> list[RankedList]: ...


def _as_tensor(values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu()
    return torch.as_tensor(np.asarray(values), dtype=torch.float32)


def _encoder_functions(encoder: Any, batch_size: int) -> tuple[Callable[[list[str]], Any], Callable[[list[str]], Any]]:
    """(encode_queries, encode_items) for the supported encoder kinds."""
    if hasattr(encoder, "encode_queries") and hasattr(encoder, "encode_items"):
        return (
            lambda texts: encoder.encode_queries(texts, batch_size=batch_size),
            lambda texts: encoder.encode_items(texts, batch_size=batch_size),
        )
    if hasattr(encoder, "encode"):
        def encode(texts: list[str]) -> Any:
            return encoder.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)

        return encode, encode
    if callable(encoder):
        return encoder, encoder
    raise TypeError(f"cannot encode with {type(encoder).__name__}: need a callable, encode_queries/encode_items or encode")


def corpus_fingerprint(doc_ids: Sequence[str]) -> str:
    """A short hash of the ordered document ids (cache key for document embeddings)."""
    digest = hashlib.sha256("\x1f".join(doc_ids).encode("utf-8")).hexdigest()
    return digest[:16]


class EmbeddingRanker:
    """Rank a corpus by embedding similarity.

    Args:
        encoder: a callable ``list[str] -> embeddings``, a model with ``encode_queries`` and
            ``encode_items`` (``EmbeddingsModelInterface``), or a sentence-transformers model.
        corpus: ``{doc_id: text}`` (needed unless ``doc_embeddings`` is given with ``doc_ids``).
        doc_ids: the ids in embedding row order (default: ``corpus`` order).
        doc_embeddings: precomputed document embeddings (rows follow ``doc_ids``); skips encoding.
        cache_path: a ``.pt`` file; loaded when it holds embeddings for the same ids, else written
            after encoding. Use one file per model (the cache does not know which model made it).
        similarity: ``"cosine"`` (default) or ``"dot"``.
        batch_size: encoding batch size (default 64).
        name: shown in simulated sessions' ``search_meta`` (default ``"embedding"``).
    """

    def __init__(
        self,
        encoder: Any,
        corpus: Mapping[str, str] | None = None,
        *,
        doc_ids: Sequence[str] | None = None,
        doc_embeddings: Any = None,
        cache_path: str | Path | None = None,
        similarity: str = "cosine",
        batch_size: int = 64,
        name: str = "embedding",
    ) -> None:
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', not {similarity!r}")
        self.name = name
        self.similarity = similarity
        self._encode_queries, self._encode_items = _encoder_functions(encoder, batch_size)
        if doc_ids is None:
            if corpus is None:
                raise ValueError("give corpus or doc_ids")
            doc_ids = list(corpus)
        self.doc_ids = [str(doc_id) for doc_id in doc_ids]
        self.cache_path = Path(cache_path) if cache_path else None
        if doc_embeddings is None:
            doc_embeddings = self._load_cache()
        if doc_embeddings is None:
            if corpus is None:
                raise ValueError("corpus texts are needed to encode documents")
            doc_embeddings = _as_tensor(self._encode_items([corpus[doc_id] for doc_id in self.doc_ids]))
            self._save_cache(doc_embeddings)
        self.doc_embeddings = _as_tensor(doc_embeddings)
        if self.doc_embeddings.shape[0] != len(self.doc_ids):
            raise ValueError(f"{self.doc_embeddings.shape[0]} embeddings for {len(self.doc_ids)} documents")
        self._matrix = self._normalise(self.doc_embeddings)

    def _normalise(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.similarity == "cosine":
            return torch.nn.functional.normalize(embeddings, dim=-1)
        return embeddings

    def _load_cache(self) -> torch.Tensor | None:
        if self.cache_path is None or not self.cache_path.exists():
            return None
        payload = torch.load(self.cache_path, map_location="cpu", weights_only=True)
        if payload.get("fingerprint") != corpus_fingerprint(self.doc_ids):
            return None
        return payload["embeddings"]

    def _save_cache(self, embeddings: torch.Tensor) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(self.cache_path.suffix + ".tmp")
        torch.save({"fingerprint": corpus_fingerprint(self.doc_ids), "embeddings": embeddings}, tmp)
        tmp.replace(self.cache_path)

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """``(len(queries), len(doc_ids))`` similarity scores."""
        query_embeddings = self._normalise(_as_tensor(self._encode_queries(list(queries))))
        return query_embeddings @ self._matrix.T

    def rank_many(self, queries: Sequence[str], top_k: int, chunk_size: int = 256) -> list[RankedList]:
        """Top ``top_k`` ``(doc_id, score)`` per query, best first."""
        k = min(top_k, len(self.doc_ids))
        ranked: list[RankedList] = []
        for start in range(0, len(queries), chunk_size):
            values, indices = torch.topk(self.scores(queries[start : start + chunk_size]), k=k, dim=1)
            for row_values, row_indices in zip(values.tolist(), indices.tolist()):
                ranked.append([(self.doc_ids[i], float(v)) for i, v in zip(row_indices, row_values)])
        return ranked

    def rank(self, query: str, top_k: int) -> RankedList:
        return self.rank_many([query], top_k)[0]


__all__ = ["BM25Ranker", "EmbeddingRanker", "Ranker", "RankedList", "corpus_fingerprint"]
