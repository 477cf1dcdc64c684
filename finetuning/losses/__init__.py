"""Losses over :class:`~finetuning.features_extractor.FineTuningFeatures`, one a module."""

from finetuning.losses.base import RankingLossInterface
from finetuning.losses.click_infonce import ClickInfoNCELoss
from finetuning.losses.prob_margin import CosineProbMarginRankingLoss, ProbMarginRankingLoss

__all__ = ["ClickInfoNCELoss", "CosineProbMarginRankingLoss", "ProbMarginRankingLoss", "RankingLossInterface"]
