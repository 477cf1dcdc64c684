"""What a batch of sessions becomes for a loss: :class:`FineTuningFeatures`, and :func:`flatten_batch`,
which turns the shapes a data loader yields into a flat list of inputs.

Built by :class:`~finetuning.features_extractor.FeaturesExtractor`; read by every loss in
:mod:`finetuning.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from finetuning.grad_cache import CachedEmbeddings
from finetuning.inputs.input import FineTuningInput

Batch = Sequence[FineTuningInput] | Sequence[tuple[FineTuningInput | None, FineTuningInput | None]] | tuple


@dataclass
class FineTuningFeatures:
    """Everything a loss needs for one batch (tensors on the model's device)."""

    query_embeddings: torch.Tensor  # (Q, d)
    item_embeddings: torch.Tensor  # (I, d)
    positive_query_index: torch.Tensor  # (K,) one entry per (query, clicked item)
    positive_item_index: torch.Tensor  # (K,)
    positive_weights: torch.Tensor  # (K,)
    negative_weights: torch.Tensor  # (Q, I) weight of item j as a negative of query i (0 = excluded)
    pair_query_index: torch.Tensor  # (P,) seed pairwise view: (clicked, shown-not-clicked) per query
    pair_positive_index: torch.Tensor  # (P,)
    pair_negative_index: torch.Tensor  # (P,)
    positive_ranks: torch.Tensor  # (P,) ranker(query, clicked)
    negative_ranks: torch.Tensor  # (P,) ranker(query, not clicked)
    target: torch.Tensor  # (P,) +1 when ranks are similarities, -1 when distances
    positive_confidences: torch.Tensor  # (P,)
    negative_confidences: torch.Tensor  # (P,)
    is_similarity: bool = True
    # (Q, I) True where item j was shown to query i (its own results); False: another query's item in the batch
    shown_mask: torch.Tensor | None = None
    query_texts: list[Any] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    cached: list[CachedEmbeddings] = field(default_factory=list, repr=False)  # embeddings computed without autograd

    def backward_through_towers(self) -> None:
        """After ``loss.backward()``: push the gradients left on gradient-cached embeddings through
        the towers, one mini-batch at a time (see :mod:`finetuning.grad_cache`)."""
        for cache in self.cached:  # first release every graph kept from the first pass
            cache.backward_kept()
        for cache in self.cached:
            cache.backward()

    @property
    def confidences(self) -> torch.Tensor:
        return self.positive_confidences * self.negative_confidences

    def __len__(self) -> int:
        return int(self.positive_ranks.shape[0])

    @property
    def is_empty(self) -> bool:
        return self.positive_item_index.numel() == 0


def flatten_batch(batch: Batch) -> list[FineTuningInput]:
    """A list of inputs, a list of (not-irrelevant, irrelevant) tuples or one such tuple → inputs."""
    if isinstance(batch, FineTuningInput):
        return [batch]
    if isinstance(batch, tuple):
        batch = [batch]
    out: list[FineTuningInput] = []
    for element in batch:
        if isinstance(element, (tuple, list)):
            out.extend(e for e in element if e is not None)
        elif element is not None:
            out.append(element)
    return out
