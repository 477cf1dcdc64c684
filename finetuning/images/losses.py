"""Contrastive losses where labels define the positives.

- :func:`supervised_contrastive_loss` — SupCon (Khosla et al., 2020, "Supervised Contrastive
  Learning"): for each anchor, every other sample of its class is a positive and all other
  samples are negatives; a softmax over cosine similarities / temperature.
- :func:`batch_hard_triplet_loss` — Hermans et al., 2017, "In Defense of the Triplet Loss":
  per anchor, the farthest positive and the nearest negative in the batch, hinge with a margin.

Both take embeddings ``(n, d)`` and labels ``(n,)``; anchors without a positive in the batch
are ignored (the loss is 0 if there is none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    z = F.normalize(embeddings, dim=-1)
    logits = z @ z.T / temperature
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    has_positive = positives.any(dim=1)
    if not has_positive.any():
        return embeddings.sum() * 0.0
    mean_log_prob_pos = (log_prob.masked_fill(~positives, 0.0).sum(dim=1) / positives.sum(dim=1).clamp(min=1))
    return -mean_log_prob_pos[has_positive].mean()


def batch_hard_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    z = F.normalize(embeddings, dim=-1)
    distances = torch.cdist(z, z)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    positives = same & ~eye
    valid = positives.any(dim=1) & (~same).any(dim=1)
    if not valid.any():
        return embeddings.sum() * 0.0
    hardest_positive = distances.masked_fill(~positives, float("-inf")).max(dim=1).values
    hardest_negative = distances.masked_fill(same, float("inf")).min(dim=1).values
    return F.relu(hardest_positive - hardest_negative + margin)[valid].mean()


LOSSES = {"supcon": supervised_contrastive_loss, "batch_hard_triplet": batch_hard_triplet_loss}
