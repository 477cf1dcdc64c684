"""``InMemoryTracker``: an :class:`ExperimentTracker` that keeps everything in lists (tests, benches).

``save_model`` keeps a CPU copy of the model's ``state_dict`` when the run's quality is the best
seen (``best_only``) or always; ``get_quality`` is the best value of ``main_metric`` so far
(``nan`` before any).
"""

from __future__ import annotations

import math

from finetuning.tracking.tracker import ExperimentTracker, MetricValue


class InMemoryTracker(ExperimentTracker):
    def __init__(self, main_metric: str = "val_ndcg@10", higher_is_better: bool = True) -> None:
        self.main_metric = main_metric
        self.higher_is_better = higher_is_better
        self.metrics: list[MetricValue] = []
        self.params: dict[str, object] = {}
        self.saved_models: list[dict] = []
        self._saved_quality: float | None = None
        self.quality_metric: str | None = None

    def save_quality_metric(self, name: str) -> None:
        self.quality_metric = name

    def save_metric(self, metric: MetricValue) -> None:
        self.metrics.append(metric)

    def save_params(self, params: dict[str, object]) -> None:
        self.params.update(params)

    def values(self, name: str) -> list[float]:
        return [m.value for m in self.metrics if m.name == name]

    def get_quality(self) -> float:
        values = [v for v in self.values(self.main_metric) if not math.isnan(v)]
        if not values:
            return math.nan
        return max(values) if self.higher_is_better else min(values)

    def save_model(self, model, best_only: bool = True, quality: float | None = None) -> bool:
        quality = self.get_quality() if quality is None else quality
        if best_only and self._saved_quality is not None and not self.is_better(quality, self._saved_quality):
            return False
        self._saved_quality = quality
        self.saved_models.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return True
