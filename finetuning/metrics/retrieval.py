"""Ranking-quality metrics over ranked id lists: nDCG@k, MRR@k, Recall@k.

Inputs are, per query, the ranked ids (best first) and the relevant ids (a set, or a mapping
id → graded relevance). Queries without any relevant id are skipped (they carry no signal), as
in BEIR/pytrec_eval. All functions return the mean over the remaining queries (0.0 if none).

    >>> ndcg_at_k([["a", "b"]], [{"b"}], k=10)   # doctest: +ELLIPSIS
    0.630...
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch

Relevance = Mapping[str, float] | set[str] | frozenset[str]


def _gains(relevant: Relevance) -> Mapping[str, float]:
    if isinstance(relevant, Mapping):
        return {key: float(value) for key, value in relevant.items() if float(value) > 0}
    return {key: 1.0 for key in relevant}


def _per_query(ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance]) -> Iterable[tuple[Sequence[str], Mapping[str, float]]]:
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} rankings for {len(relevant)} relevance sets")
    for ids, rel in zip(ranked, relevant):
        gains = _gains(rel)
        if gains:
            yield ids, gains


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def ndcg_per_query(ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance], k: int = 10) -> list[float]:
    """nDCG@k of each query that has a relevant id, linear gains (the BEIR / trec_eval convention)."""
    scores = []
    for ids, gains in _per_query(ranked, relevant):
        dcg = sum(gains.get(doc, 0.0) / math.log2(position + 2) for position, doc in enumerate(ids[:k]))
        ideal = sorted(gains.values(), reverse=True)[:k]
        idcg = sum(gain / math.log2(position + 2) for position, gain in enumerate(ideal))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return scores


def mrr_per_query(ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance], k: int = 10) -> list[float]:
    """Reciprocal rank of the first relevant id within the top k, per query."""
    scores = []
    for ids, gains in _per_query(ranked, relevant):
        reciprocal = 0.0
        for position, doc in enumerate(ids[:k]):
            if doc in gains:
                reciprocal = 1.0 / (position + 1)
                break
        scores.append(reciprocal)
    return scores


def recall_per_query(ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance], k: int = 100) -> list[float]:
    """Share of the relevant ids found within the top k, per query."""
    scores = []
    for ids, gains in _per_query(ranked, relevant):
        found = sum(1 for doc in ids[:k] if doc in gains)
        scores.append(found / len(gains))
    return scores


def ndcg_at_k(ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance], k: int = 10) -> float:
    """Normalised discounted cumulative gain with linear gains (the BEIR / trec_eval convention)."""
    return _mean(ndcg_per_query(ranked, relevant, k))


def mrr_at_k(ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance], k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant id within the top k."""
    return _mean(mrr_per_query(ranked, relevant, k))


def recall_at_k(ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance], k: int = 100) -> float:
    """Share of the relevant ids found within the top k."""
    return _mean(recall_per_query(ranked, relevant, k))


def retrieval_scores(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance], ks: Sequence[int] = (10, 100)
) -> dict[str, list[float]]:
    """Per-query ``{"ndcg@10": [...], "mrr@10": [...], "recall@10": [...], ...}`` (queries in input
    order, those without a relevant id left out): what a paired comparison of two models needs."""
    out: dict[str, list[float]] = {}
    for k in ks:
        out[f"ndcg@{k}"] = ndcg_per_query(ranked, relevant, k)
        out[f"mrr@{k}"] = mrr_per_query(ranked, relevant, k)
        out[f"recall@{k}"] = recall_per_query(ranked, relevant, k)
    return out


def retrieval_metrics(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Relevance], ks: Sequence[int] = (10, 100)
) -> dict[str, float]:
    """``{"ndcg@10", "mrr@10", "recall@10", "recall@100", ...}`` for each k in ``ks`` (means over queries)."""
    return {name: _mean(values) for name, values in retrieval_scores(ranked, relevant, ks).items()}


def top_k_ids(
    query_embeddings: torch.Tensor,
    item_embeddings: torch.Tensor,
    item_ids: Sequence[str],
    k: int,
    similarity: str = "cosine",
    chunk_size: int = 1024,
) -> list[list[str]]:
    """Rank ``item_ids`` for each query embedding by ``cosine`` or ``dot`` similarity (or negative
    ``euclidean`` distance), in chunks of queries so memory stays bounded."""
    if similarity == "cosine":
        query_embeddings = torch.nn.functional.normalize(query_embeddings.float(), dim=-1)
        item_embeddings = torch.nn.functional.normalize(item_embeddings.float(), dim=-1)
    k = min(k, len(item_ids))
    ranked: list[list[str]] = []
    for start in range(0, query_embeddings.shape[0], chunk_size):
        block = query_embeddings[start : start + chunk_size].float()
        if similarity == "euclidean":
            scores = -torch.cdist(block, item_embeddings.float())
        elif similarity in ("cosine", "dot"):
            scores = block @ item_embeddings.float().T
        else:
            raise ValueError(f"unknown similarity {similarity!r} (cosine, dot, euclidean)")
        indices = torch.topk(scores, k=k, dim=1).indices
        ranked.extend([[item_ids[i] for i in row] for row in indices.tolist()])
    return ranked
