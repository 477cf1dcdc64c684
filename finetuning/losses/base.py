"""The loss contract: ``loss(features: FineTuningFeatures) -> scalar tensor`` (an ``nn.Module``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from finetuning.features_extractor import FineTuningFeatures


class RankingLossInterface(nn.Module, ABC):
    @abstractmethod
    def forward(self, features: FineTuningFeatures) -> torch.Tensor: ...


def zero_loss(features: FineTuningFeatures) -> torch.Tensor:
    """A zero that keeps the graph (so a batch without pairs still backpropagates harmlessly)."""
    return features.query_embeddings.sum() * 0.0 + features.item_embeddings.sum() * 0.0
