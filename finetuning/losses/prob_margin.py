"""Margin ranking losses over (clicked, shown-not-clicked) pairs, weighted by confidence.

``ProbMarginRankingLoss(base_margin=0.1)``: for every pair p of the features' pairwise view,
``max(0, margin_p - target_p * (adjust(pos_p) - adjust(neg_p)))`` with a probabilistic margin
``margin_p = base_margin * c_p / mean(c)`` where ``c_p`` is the pair confidence (click confidence
× skip confidence): pairs we trust more must be separated more. ``target`` is +1 for similarity
rankers and -1 for distances. Returns the mean over pairs (0 with a live graph when there are none).

``CosineProbMarginRankingLoss`` maps cosine scores from [-1, 1] to [0, 1] with ``(s + 1) / 2``
before the margin is applied, so ``base_margin`` is a share of the cosine range. The mapping is
the public :meth:`adjust` hook that ``forward`` always calls (the peer project's name-mangled
version was never called).

    >>> loss = ProbMarginRankingLoss(base_margin=0.1)
    >>> value = loss(extractor(batch, items_set))     # doctest: +SKIP
"""

from __future__ import annotations

import torch

from finetuning.features_extractor import FineTuningFeatures
from finetuning.losses.base import RankingLossInterface, zero_loss


class ProbMarginRankingLoss(RankingLossInterface):
    def __init__(self, base_margin: float = 0.1) -> None:
        super().__init__()
        if base_margin < 0:
            raise ValueError("base_margin must be >= 0")
        self.base_margin = base_margin

    def adjust(self, positive_ranks: torch.Tensor, negative_ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map raw ranker scores to the space where the margin applies (identity here)."""
        return positive_ranks, negative_ranks

    def forward(self, features: FineTuningFeatures) -> torch.Tensor:
        if len(features) == 0:
            return zero_loss(features)
        positive, negative = self.adjust(features.positive_ranks, features.negative_ranks)
        confidences = features.confidences
        margin = self.base_margin * confidences / confidences.mean().clamp_min(1e-8)
        return torch.relu(margin - features.target * (positive - negative)).mean()


class CosineProbMarginRankingLoss(ProbMarginRankingLoss):
    def adjust(self, positive_ranks: torch.Tensor, negative_ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine in [-1, 1] → [0, 1]."""
        return (positive_ranks + 1) / 2, (negative_ranks + 1) / 2
