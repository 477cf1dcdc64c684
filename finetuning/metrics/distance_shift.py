"""``DistanceShift``: how far fine-tuning moved clicked results away from skipped ones.

Per validation it reports ``pair_gap`` = the confidence-weighted mean of
``target * (score(query, clicked) - score(query, skipped))`` over the validation pairs, and
``distance_shift`` = that gap minus the gap of the first validation it computed (the base model
when ``fine_tune`` evaluates before training). Positive = clicked results moved closer than skipped
ones.
"""

from __future__ import annotations

from typing import Sequence

from finetuning.features_extractor import FineTuningFeatures
from finetuning.inputs.input import FineTuningInput
from finetuning.metrics.base import MetricCalculator, MetricContext


class DistanceShift(MetricCalculator):
    def __init__(self) -> None:
        self.baseline: float | None = None
        self.reset()

    def reset(self) -> None:
        self._weighted_sum = 0.0
        self._weight = 0.0

    def update(self, features: FineTuningFeatures, inputs: Sequence[FineTuningInput]) -> None:
        if len(features) == 0:
            return
        gap = features.target * (features.positive_ranks - features.negative_ranks)
        weights = features.confidences
        self._weighted_sum += float((gap * weights).sum())
        self._weight += float(weights.sum())

    def compute(self, context: MetricContext | None = None) -> dict[str, float]:
        if self._weight == 0:
            return {}
        gap = self._weighted_sum / self._weight
        if self.baseline is None:
            self.baseline = gap
        return {"pair_gap": gap, "distance_shift": gap - self.baseline}
