"""Settings names → objects (``FineTuningSettings`` holds names so it round-trips through MLflow).

| setting | names |
|---|---|
| ``loss_func`` | ``click_infonce``, ``prob_margin``, ``cosine_prob_margin`` |
| ``metric_calculators`` | ``distance_shift``, ``retrieval``, ``retrieval_own_results``, ``retrieval_all_shown``, ``retrieval_all_shown_flat_prior``, ``retrieval_randomized`` |
| ``ranker`` | ``cosine``, ``dot``, ``euclidean`` |
| ``confidence_calculator`` | ``dummy``, ``position_bias``, ``click_relevance``, ``click_relevance_by_rank`` |

Unknown names raise ``KeyError`` listing the known ones.
"""

from __future__ import annotations

from typing import Callable, Sequence

from finetuning.click_relevance import ClickRelevanceModel
from finetuning.confidences import PositionBiasConfidences, dummy_confidences
from finetuning.losses import ClickInfoNCELoss, CosineProbMarginRankingLoss, ProbMarginRankingLoss
from finetuning.metrics.base import MetricCalculator
from finetuning.metrics.distance_shift import DistanceShift
from finetuning.metrics.held_out import HeldOutRetrievalMetrics
from finetuning.params import FineTuningParams
from finetuning.rankers import RANKERS, Ranker

LOSSES: dict[str, Callable[[FineTuningParams], object]] = {
    "click_infonce": lambda p: ClickInfoNCELoss(temperature=p.temperature, false_negative_margin=p.false_negative_margin),
    "prob_margin": lambda p: ProbMarginRankingLoss(base_margin=p.margin),
    "cosine_prob_margin": lambda p: CosineProbMarginRankingLoss(base_margin=p.margin),
}
METRICS: dict[str, Callable[[], MetricCalculator]] = {
    "distance_shift": DistanceShift,
    "retrieval": HeldOutRetrievalMetrics,
    # each held-out query ranked against its own shown results only (no bias for the start model):
    # own_ndcg@10, own_mrr@10, ...
    "retrieval_own_results": lambda: HeldOutRetrievalMetrics(own_results_only=True, name_prefix="own_"),
    "retrieval_all_shown": lambda: HeldOutRetrievalMetrics(own_results_only=True, name_prefix="shown_", grade_all_shown=True),
    "retrieval_all_shown_flat_prior": lambda: HeldOutRetrievalMetrics(own_results_only=True, name_prefix="flat_", grade_all_shown=True,
                                                                      prior_by_rank=False),
    # exploration sessions only (results shown in a random order), every shown result graded from the
    # overall prior: rand_ndcg@10, ...; a query with no exploration session is not judged, and fewer
    # than 10 judged queries (the quality gate's minimum) record nothing
    "retrieval_randomized": lambda: HeldOutRetrievalMetrics(own_results_only=True, name_prefix="rand_", grade_all_shown=True,
                                                            prior_by_rank=False, randomized_only=True, min_queries=10),
}
CONFIDENCES: dict[str, Callable[[], object]] = {
    "dummy": lambda: dummy_confidences,
    "position_bias": PositionBiasConfidences,
    "click_relevance": ClickRelevanceModel,
    # per-rank click rates (trust bias); measured and not the default (docs/engine.md)
    "click_relevance_by_rank": lambda: ClickRelevanceModel(rank_rate_strength=20.0),
}


def _pick(table: dict, name: str, what: str):
    if name not in table:
        raise KeyError(f"unknown {what} {name!r}; known: {sorted(table)}")
    return table[name]


def loss(name: str, params: FineTuningParams):
    return _pick(LOSSES, name, "loss")(params)


def metric_calculators(names: Sequence[str]) -> list[MetricCalculator]:
    return [_pick(METRICS, name, "metric")() for name in names]


def ranker(name: str) -> Ranker:
    return _pick(RANKERS, name, "ranker")


def confidence_calculator(name: str):
    return _pick(CONFIDENCES, name, "confidence calculator")()
