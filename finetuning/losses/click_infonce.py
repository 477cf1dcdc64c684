"""Click-weighted in-batch contrastive loss (InfoNCE) with shown-not-clicked hard negatives.

For every (query q, clicked item p) of the batch, with cosine similarities ``s`` scaled by
``1/temperature``::

    loss_qp = -s(q, p) + log( exp s(q, p) + Σ_j w_qj · exp s(q, j) )

where j runs over all items embedded in the batch and ``w_qj`` comes from
``features.negative_weights``: 0 for q's own clicks and for results q showed but (probably) never
examined (the false-negative guard), the skip confidence for q's hard negatives (shown above a
click, not clicked), 1 for other queries' items (in-batch negatives). With
``false_negative_margin`` m, another query's item that the model itself already scores within m of
q's positive (``cos(q, j) > cos(q, p) - m``) is dropped as a likely false negative: in a data set
whose queries share relevant documents, another query's click is often relevant to q too. This is
GISTEmbed's filter (Solatorio 2024, "GISTEmbed: Guided In-sample Selection of Training Negatives")
with the model being trained as its own guide; off by default (``None``): on the quality suite's
cells it changed nothing at m = 0 and nothing useful at m = 0.1 (docs/engine.md). The batch loss is the
mean of ``loss_qp`` weighted by the click confidences. It is the MultipleNegativesRankingLoss of
sentence-transformers (van den Oord et al. 2018, "Representation Learning with Contrastive
Predictive Coding"; Henderson et al. 2017) extended with weights from a click model.

    >>> loss = ClickInfoNCELoss(temperature=0.05)
    >>> value = loss(extractor(batch, items_set))     # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from finetuning.features_extractor import FineTuningFeatures
from finetuning.losses.base import RankingLossInterface, zero_loss


class ClickInfoNCELoss(RankingLossInterface):
    def __init__(self, temperature: float = 0.05, hard_negative_weight: float = 1.0,
                 false_negative_margin: float | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature
        self.hard_negative_weight = hard_negative_weight
        self.false_negative_margin = false_negative_margin

    def forward(self, features: FineTuningFeatures) -> torch.Tensor:
        if features.is_empty:
            return zero_loss(features)
        queries = F.normalize(features.query_embeddings, dim=-1)
        items = F.normalize(features.item_embeddings, dim=-1)
        scores = queries @ items.T / self.temperature  # (Q, I)
        rows = features.positive_query_index
        cols = features.positive_item_index
        logits = scores[rows]  # (K, I)
        weights = features.negative_weights[rows].clone()  # (K, I)
        if self.hard_negative_weight != 1.0:
            weights = torch.where((weights > 0) & (weights < 1), weights * self.hard_negative_weight, weights)
        if self.false_negative_margin is not None and features.shown_mask is not None:
            cosines = (scores[rows] * self.temperature).detach()
            positive = cosines.gather(1, cols[:, None])
            likely_relevant = (cosines > positive - self.false_negative_margin) & ~features.shown_mask[rows]
            weights = weights.masked_fill(likely_relevant, 0.0)
        weights[torch.arange(len(cols), device=cols.device), cols] = 1.0  # the positive itself
        logits = logits + torch.log(weights.clamp_min(1e-30)).masked_fill(weights <= 0, float("-inf"))
        per_pair = -logits.gather(1, cols[:, None]).squeeze(1) + torch.logsumexp(logits, dim=1)
        w = features.positive_weights
        return (per_pair * w).sum() / w.sum().clamp_min(1e-8)
