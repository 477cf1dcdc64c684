"""Similarity metrics between image embeddings and top-1 retrieval accuracy.

Scores are "higher is more similar" for every metric: ``cosine`` (normalised dot), ``dot``,
``euclidean`` (negative L2 distance). A query's prediction is the label of its best-scoring
gallery image (top-1 retrieval); its accuracy is the share of queries whose top-1 has their label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

METRICS = ("cosine", "dot", "euclidean")


def similarity_matrix(queries: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    """``(n_queries, n_gallery)`` scores, higher = more similar."""
    queries, gallery = queries.float(), gallery.float()
    if metric == "cosine":
        return F.normalize(queries, dim=-1) @ F.normalize(gallery, dim=-1).T
    if metric == "dot":
        return queries @ gallery.T
    if metric == "euclidean":
        return -torch.cdist(queries, gallery)
    raise ValueError(f"unknown similarity metric {metric!r}; use one of {METRICS}")


@dataclass
class Retrieval:
    """Top-k gallery results of each query: scores, gallery indices, labels, and the query labels."""

    scores: torch.Tensor  # (n, k), best first
    indices: torch.Tensor  # (n, k)
    labels: torch.Tensor  # (n, k) gallery labels of the results
    query_labels: torch.Tensor  # (n,)
    total: int  # gallery size

    @property
    def correct(self) -> torch.Tensor:
        """``(n, k)`` bools: the result at that rank has the query's label."""
        return self.labels == self.query_labels[:, None]

    def top1_accuracy(self) -> float:
        return float(self.correct[:, 0].float().mean()) if len(self.query_labels) else 0.0


def retrieve(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor,
             metric: str, k: int = 1) -> Retrieval:
    scores = similarity_matrix(queries, gallery, metric)
    top = torch.topk(scores, k=min(k, gallery.shape[0]), dim=1)
    return Retrieval(top.values, top.indices, gallery_labels[top.indices], query_labels, int(gallery.shape[0]))


def top1_accuracy_by_metric(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                            gallery_labels: torch.Tensor, metrics: tuple[str, ...] | list[str] = METRICS) -> dict[str, float]:
    return {metric: retrieve(queries, query_labels, gallery, gallery_labels, metric).top1_accuracy() for metric in metrics}


def choose_metric(accuracies: dict[str, float]) -> str:
    """The metric with the best accuracy; ties go to the earlier one in the given order."""
    return max(accuracies, key=lambda metric: (accuracies[metric], -list(accuracies).index(metric)))
