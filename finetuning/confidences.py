"""Confidence calculators: how much to trust each click and each skip.

A calculator is called with a batch of :class:`FineTuningInput` and returns, per input, a map
``object_id -> confidence`` for every shown result: for a clicked result the weight of the
evidence that it is relevant, for a skipped one the probability that it was looked at (so that
skipping it says "not relevant").

- :func:`dummy_confidences`: 1.0 everywhere (uniform).
- :class:`PositionBiasConfidences`: a position-based click model (Richardson et al. 2007; Joachims
  et al., "Unbiased Learning-to-Rank with Biased Feedback", WSDM 2017). Examination ``θ_r`` by
  display rank is estimated from click-through rates (``CTR_r / CTR_1``, smoothed towards
  ``1/r``, never below ``1/r`` because the CTR ratio also falls with relevance, non-increasing);
  a skip at rank r weighs ``θ_r``; a click at rank r weighs ``min(1/θ_r, max_click_weight)``
  (inverse propensity, default cap 10). The :class:`~finetuning.features_extractor.FeaturesExtractor`
  averages a result's click weights over all sessions of its query and clips the mean to 1, so a
  positive's weight is the click model's relevance estimate (``CTR_r / θ_r``), not one click's
  weight: a single stray click at rank 8 of 3 sessions still weighs 1, of 20 sessions 0.13.
  (Weighting each click by itself, without the pooling, amplified noise clicks: on SciFact with
  3 simulated sessions per query held-out nDCG fell.)
  It is fitted on all training sessions by ``fit`` when the caller can (``fine_tune`` does), else
  on the batch itself.
"""

from __future__ import annotations

from typing import Sequence

from finetuning.inputs.input import FineTuningInput


def dummy_confidences(inputs: Sequence[FineTuningInput]) -> list[dict[str, float]]:
    """Uniform confidence 1.0 for every shown result of every input."""
    return [{object_id: 1.0 for object_id in item.results} for item in inputs]


class PositionBiasConfidences:
    def __init__(
        self,
        max_rank: int = 100,
        prior_strength: float = 20.0,
        min_examination: float = 0.05,
        max_click_weight: float = 10.0,
    ) -> None:
        self.max_rank = max_rank
        self.prior_strength = prior_strength
        self.min_examination = min_examination
        self.max_click_weight = max_click_weight
        self.examination: list[float] | None = None

    def estimate(self, inputs: Sequence[FineTuningInput]) -> list[float]:
        """``θ_r`` for r = 1..max_rank (index r-1) from the clicks of ``inputs``."""
        shown = [0.0] * self.max_rank
        clicks = [0.0] * self.max_rank
        for item in inputs:
            if item.is_irrelevant:
                continue
            clicked = set(item.clicked_ids)
            for object_id in item.results:
                r = min(item.rank(object_id), self.max_rank) - 1
                shown[r] += 1
                clicks[r] += object_id in clicked
        if shown[0] == 0 or clicks[0] == 0:
            return [1.0 / (r + 1) for r in range(self.max_rank)]
        ctr_top = clicks[0] / shown[0]
        theta: list[float] = []
        for r in range(self.max_rank):
            prior = ctr_top / (r + 1)
            ctr = (clicks[r] + self.prior_strength * prior) / (shown[r] + self.prior_strength)
            # CTR_r / CTR_1 also falls because relevance falls with rank: it is a lower bound of
            # examination, so it never goes below the usual 1/r examination curve
            value = max(min(1.0, ctr / ctr_top), 1.0 / (r + 1))
            if theta:
                value = min(value, theta[-1])
            theta.append(max(value, self.min_examination))
        theta[0] = 1.0
        return theta

    def fit(self, inputs: Sequence[FineTuningInput]) -> "PositionBiasConfidences":
        self.examination = self.estimate(inputs)
        return self

    def __call__(self, inputs: Sequence[FineTuningInput]) -> list[dict[str, float]]:
        theta = self.examination or self.estimate(inputs)
        out = []
        for item in inputs:
            clicked = set(item.clicked_ids)
            weights = {}
            for object_id in item.results:
                examination = theta[min(item.rank(object_id), self.max_rank) - 1]
                if object_id in clicked:
                    weights[object_id] = min(1.0 / examination, self.max_click_weight)
                else:
                    weights[object_id] = examination
            out.append(weights)
        return out
