"""From a similarity score to a calibrated confidence that the result is the right class.

:class:`SimilarityCalibrator` is fitted on validation retrievals: for each query, its top
``k`` results (``k = 1`` by default: the issue's "similarity → top-1 correctness" curve), the
target being "this result has the query's label".

- ``isotonic`` (the default of :meth:`SimilarityCalibrator.fit`; both optimizers default to
  ``logistic``): a monotone, non-parametric curve over the similarity
  (``sklearn.isotonic.IsotonicRegression``); rank and total do not enter it.
- ``logistic``: ``sklearn.linear_model.LogisticRegression`` on ``[similarity, log(rank),
  rank / total]`` (Platt-style), so with ``k > 1`` the confidence also falls with the rank.

``confidence(similarity, rank, total)`` is the API. The fitted curve is stored as plain JSON
(thresholds or coefficients) — loading never unpickles anything.

:func:`raw_confidence` is the *uncalibrated* reading of a score as a probability (cosine
clipped to [0, 1], ``sigmoid`` of a dot product, ``1 / (1 + distance)``): the "before" of ECE;
:func:`uncalibrated_confidence` is the same reading for similarities converted from a Chroma
collection's distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

CalibrationMethod = Literal["isotonic", "logistic"]


def raw_confidence(scores: np.ndarray, metric: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if metric == "cosine":
        return np.clip(scores, 0.0, 1.0)
    if metric == "dot":
        return 1.0 / (1.0 + np.exp(-scores))
    if metric == "euclidean":  # scores are negative distances
        return 1.0 / (1.0 + np.maximum(-scores, 0.0))
    raise ValueError(f"unknown metric {metric!r}")


def uncalibrated_confidence(similarities: np.ndarray, space: str) -> np.ndarray:
    """The uncalibrated confidence of a Chroma-space similarity (see
    :func:`finetuning.images.searcher.distances_to_similarities`): cosine clipped to [0, 1],
    ``sigmoid`` of an inner product, and ``1 / (1 + distance)`` for ``l2`` (already in (0, 1])."""
    similarities = np.asarray(similarities, dtype=np.float64)
    if space == "cosine":
        return raw_confidence(similarities, "cosine")
    if space == "ip":
        return raw_confidence(similarities, "dot")
    if space == "l2":
        return np.clip(similarities, 0.0, 1.0)
    raise ValueError(f"unknown space {space!r}")


def _features(similarity: np.ndarray, rank: np.ndarray, total: np.ndarray) -> np.ndarray:
    similarity, rank, total = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (similarity, rank, total))
    return np.stack([similarity, np.log(rank), rank / np.maximum(total, 1.0)], axis=1)


@dataclass
class SimilarityCalibrator:
    method: CalibrationMethod
    metric: str
    params: dict[str, Any]

    @classmethod
    def fit(cls, similarity: np.ndarray, rank: np.ndarray, total: np.ndarray, correct: np.ndarray,
            method: CalibrationMethod = "isotonic", metric: str = "cosine") -> "SimilarityCalibrator":
        similarity = np.asarray(similarity, dtype=np.float64).reshape(-1)
        correct = np.asarray(correct, dtype=np.float64).reshape(-1)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            curve = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
            curve.fit(similarity, correct)
            params = {"x": curve.X_thresholds_.tolist(), "y": curve.y_thresholds_.tolist()}
        elif method == "logistic":
            if len(set(correct.tolist())) < 2:  # one class only: a constant confidence
                params = {"constant": float(correct.mean()) if len(correct) else 0.5}
            else:
                from sklearn.linear_model import LogisticRegression

                model = LogisticRegression(C=10.0, max_iter=1000).fit(_features(similarity, rank, total), correct)
                params = {"coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])}
        else:
            raise ValueError(f"unknown calibration method {method!r}")
        return cls(method=method, metric=metric, params=params)

    def confidences(self, similarity: np.ndarray, rank: np.ndarray | int = 1, total: np.ndarray | int = 1) -> np.ndarray:
        similarity = np.asarray(similarity, dtype=np.float64).reshape(-1)
        rank = np.broadcast_to(np.asarray(rank, dtype=np.float64), similarity.shape)
        total = np.broadcast_to(np.asarray(total, dtype=np.float64), similarity.shape)
        if self.method == "isotonic":
            return np.interp(similarity, self.params["x"], self.params["y"])
        if "constant" in self.params:
            return np.full(similarity.shape, self.params["constant"])
        logits = _features(similarity, rank, total) @ np.asarray(self.params["coef"]) + self.params["intercept"]
        return 1.0 / (1.0 + np.exp(-logits))

    def confidence(self, similarity: float, rank: int = 1, total: int = 1) -> float:
        """Probability that the result at ``rank`` (1-based) of ``total`` with this similarity is right."""
        if rank < 1:
            raise ValueError("rank is 1-based")
        return float(self.confidences(np.array([similarity]), rank, max(total, rank))[0])

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "metric": self.metric, "params": self.params}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "SimilarityCalibrator":
        return cls(method=value["method"], metric=value["metric"], params=value["params"])


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins over [0, 1]: count, mean confidence, accuracy (empty bins are skipped)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(mask.sum()),
                         "confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean())})
    return bins


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """ECE (Naeini et al., 2015; Guo et al., 2017): bin-weighted |accuracy − confidence|."""
    n = len(np.asarray(confidence))
    if n == 0:
        return math.nan
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(confidence, correct, n_bins)))
