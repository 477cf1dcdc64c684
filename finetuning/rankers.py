"""Rankers: how a query embedding scores an item embedding.

A ranker takes two tensors of the same shape ``(n, dim)`` and returns ``(n,)`` scores row by
row, always along the embedding axis (``dim=-1``). ``cosine`` and ``dot`` are similarities
(higher = closer); ``euclidean`` is a distance (use ``is_similarity=False``).
:func:`score_matrix` gives all query × item scores for the same ranker.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Ranker = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine(query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(query, items, dim=-1)


def dot(query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return (query * items).sum(dim=-1)


def euclidean(query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return (query - items).norm(dim=-1)


RANKERS: dict[str, Ranker] = {"cosine": cosine, "dot": dot, "euclidean": euclidean}


def ranker_name(ranker: Ranker) -> str:
    for name, fn in RANKERS.items():
        if fn is ranker:
            return name
    raise ValueError(f"unknown ranker {ranker!r}")


def score_matrix(ranker: Ranker, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``(n_queries, n_items)`` scores of ``ranker`` (a distance for ``euclidean``)."""
    if ranker is cosine:
        return F.normalize(queries, dim=-1) @ F.normalize(items, dim=-1).T
    if ranker is dot:
        return queries @ items.T
    if ranker is euclidean:
        return torch.cdist(queries, items)
    n_q, n_i = queries.shape[0], items.shape[0]
    return ranker(queries.repeat_interleave(n_i, 0), items.repeat(n_q, 1)).view(n_q, n_i)
