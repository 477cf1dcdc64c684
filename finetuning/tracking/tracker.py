"""The tracker interface the fine-tuner reports to.

``finetuning`` knows nothing of MLflow: :class:`ExperimentTracker` is the contract, and
``finetuning.experiments.mlflow_manager.ExperimentsManager`` is the MLflow implementation.
Tests may use ``finetuning.tracking.in_memory.InMemoryTracker``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from finetuning.keeper_verdict import KeeperVerdict
    from finetuning.models.base import EmbeddingsModelInterface


@dataclass(frozen=True)
class MetricValue:
    """One metric reading, e.g. ``MetricValue("val_loss", 0.31, step=120)``."""

    name: str
    value: float
    step: int | None = None


class ExperimentTracker(ABC):
    """Where a fine-tuning run writes its metrics and models.

    ``main_metric`` names the metric that decides which run is best and
    ``higher_is_better`` says in which direction (e.g. ``"val_ndcg@10"``, True).
    """

    main_metric: str = "val_loss"
    higher_is_better: bool = False

    @abstractmethod
    def save_metric(self, metric: MetricValue) -> None: ...

    def save_metrics(self, metrics: Sequence[MetricValue]) -> None:
        """Several readings at once (e.g. loss and learning rate of one step); trackers that talk to a
        server send them in one call."""
        for metric in metrics:
            self.save_metric(metric)

    @abstractmethod
    def save_params(self, params: dict[str, object]) -> None: ...

    @abstractmethod
    def save_model(self, model: "EmbeddingsModelInterface", best_only: bool = True, quality: float | None = None) -> bool:
        """Store the model of the current run; with ``best_only`` only if the run is the best so far.

        ``quality`` is the main metric of the weights being stored (default: :meth:`get_quality`,
        the run's best logged value; they differ when training keeps weights that were not the
        best-scoring validation). Returns whether it was stored."""

    def save_evaluation(self, metrics_before: Mapping[str, float], metrics_after: Mapping[str, float],
                        per_query: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                        keeper: "KeeperVerdict | None" = None) -> None:
        """Record the held-out metrics of the start weights and of the weights the run kept (where the
        model choice reads them), ``keeper``: which weights the run kept and why (where the quality
        gate reads it), and ``per_query``: metric → (start, kept) per held-out query (same
        queries, same order; where the quality gate reads them). Trackers that do not choose models
        may ignore it."""

    def save_quality_metric(self, name: str) -> None:
        """Name the held-out figure the run's quality is: the one that chose its weights
        (:func:`finetuning.metrics.held_out.judge_metric`), ``main_metric`` or a twin of it. Trackers
        that rank runs record it beside the quality; others may ignore it."""

    @abstractmethod
    def get_quality(self) -> float:
        """The current run's main metric (its best value over the run)."""

    def is_better(self, candidate: float, reference: float) -> bool:
        return candidate > reference if self.higher_is_better else candidate < reference
