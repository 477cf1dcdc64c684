"""The contract of a validation metric: fed every validation batch, computed at epoch end.

``update(features, inputs)`` is called by ``EmbeddingsFineTuner.validation_step`` with the
batch's features (no gradients) and its sessions; ``compute(context)`` returns
``{name: value}`` (names without the ``val_`` prefix, which the fine-tuner adds) and ``reset()``
clears the accumulated state for the next validation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from finetuning.embedding_cache import EmbeddingsCache
from finetuning.features_extractor import FineTuningFeatures
from finetuning.inputs.input import FineTuningInput
from finetuning.inputs.query_retriever import QueryRetriever
from finetuning.models.base import EmbeddingsModelInterface
from finetuning.rankers import Ranker


@dataclass
class MetricContext:
    """What a metric may use at epoch end."""

    model: EmbeddingsModelInterface
    items_set: Mapping[str, Any]
    query_retriever: QueryRetriever
    ranker: Ranker
    confidence_calculator: Callable[[Sequence[FineTuningInput]], list[dict[str, float]]] | None = None
    embeddings: EmbeddingsCache | None = None  # the current weights' embeddings, shared with the validation steps

    def encode_queries(self, queries: list[Any], batch_size: int = 64) -> torch.Tensor:
        if self.embeddings is not None:
            return self.embeddings.queries(queries)
        return self.model.encode_queries(queries, batch_size=batch_size)

    def encode_items(self, ids: list[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings of the items ``ids`` of ``items_set``."""
        if self.embeddings is not None:
            return self.embeddings.items(ids, self.items_set)
        return self.model.encode_items([self.items_set[i] for i in ids], batch_size=batch_size)


class MetricCalculator(ABC):
    @abstractmethod
    def update(self, features: FineTuningFeatures, inputs: Sequence[FineTuningInput]) -> None: ...

    @abstractmethod
    def compute(self, context: MetricContext) -> dict[str, float]: ...

    @abstractmethod
    def reset(self) -> None: ...
