"""Fine-tuning settings from a task's options, and the ``train_fn`` that ``run_iteration`` calls per trial.

``TrialRunner(start_model, train, test, items, settings, ...)`` is that ``train_fn``: every trial
starts from a fresh copy of the **start** weights (never from the previous trial's), runs
:func:`finetuning.train.fine_tune` with two callbacks — ``StopOnRequest(should_stop)`` (cancel or
lost lease stops training after the current batch) and ``ProgressReporter`` (task progress every
few steps) — plus ``TrainingCurves`` (loss and learning rate of every step to the tracker) — and, when a trial was stopped, calls ``raise_if_canceled`` so the iteration ends
(``TaskCanceled`` is a fatal exception of ``run_iteration``). Each trained trial records its
held-out metrics before/after on its run (``tracker.save_evaluation``), where the model choice
reads them, and the main metric per held-out query of the start and of the kept weights, where the
quality gate reads them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from pydantic import ValidationError

from dao.task_documents import FineTuningOptions
from finetuning import resolve
from finetuning.callbacks import ProgressReporter, StopOnRequest
from finetuning.inputs import FineTuningInput, TextQueryRetriever
from finetuning.models.base import EmbeddingsModelInterface
from finetuning.params import FineTuningParams, FineTuningSettings
from finetuning.tracking.curves import TrainingCurves
from finetuning.train import epoch_batches, fine_tune
from worker.lifecycle import TaskRefused
from worker.lifecycle.errors import safe_detail

#: Option fields that map one-to-one onto FineTuningSettings (the ``settings`` dict may not repeat them).
_DIRECT = ("num_epochs", "batch_size", "seed")


def build_settings(options: FineTuningOptions, mini_batch_size: int | None = None) -> FineTuningSettings:
    """``FineTuningSettings`` defaults, then the worker's ``mini_batch_size`` (a memory bound of its
    machine, when set), then the task options; invalid → ``TaskRefused``."""
    clash = sorted(set(options.settings) & {*_DIRECT, "max_steps"})
    if clash:
        raise TaskRefused(f"options.settings repeats {clash}: set them as options fields instead")
    values: dict[str, Any] = {name: getattr(options, name) for name in _DIRECT}
    values["max_steps"] = options.max_steps if options.max_steps is not None else -1
    if mini_batch_size is not None:
        values["mini_batch_size"] = mini_batch_size
    values.update(options.settings)
    try:
        settings = FineTuningSettings(**values)
        resolve.loss(settings.loss_func, FineTuningParams())
        resolve.metric_calculators(settings.metric_calculators)
        resolve.ranker(settings.ranker)
        resolve.confidence_calculator(settings.confidence_calculator)
    except (ValidationError, KeyError, ValueError, TypeError) as exc:
        raise TaskRefused(f"invalid fine-tuning settings: {safe_detail(exc)}") from None
    return settings


def planned_steps(train: Sequence[FineTuningInput], settings: FineTuningSettings) -> int:
    """Training batches one trial will run (for progress fractions): the batches ``fine_tune`` makes."""
    total = max(1, len(epoch_batches(train, settings, TextQueryRetriever()))) * settings.num_epochs
    return min(total, settings.max_steps) if settings.max_steps > 0 else total


@dataclass
class TrialState:
    """Where the iteration is, for progress: trials reported so far and the total."""

    done: int = 0
    total: int = 1
    best: float | None = None


@dataclass
class TrialRunner:
    """The ``train_fn(params, tracker) -> float`` of :func:`~finetuning.experiments.run_iteration`.

    ``progress(stage, fraction, **fields)`` reports to the task; ``should_stop()`` says cancel or
    lease loss; ``raise_if_canceled()`` raises the matching exception after a stopped trial.
    """

    start_model: EmbeddingsModelInterface
    train: Sequence[FineTuningInput]
    test: Sequence[FineTuningInput]
    items: Mapping[str, Any]
    settings: FineTuningSettings
    progress: Callable[..., None]
    should_stop: Callable[[], bool]
    raise_if_canceled: Callable[[], None]
    accelerator: str = "auto"
    state: TrialState = field(default_factory=TrialState)

    def __post_init__(self) -> None:
        self.steps_per_trial = planned_steps(self.train, self.settings)

    def fresh_model(self) -> EmbeddingsModelInterface:
        """A copy of the start model: ``fine_tune`` trains in place, the start weights stay untouched."""
        return copy.deepcopy(self.start_model)

    def __call__(self, params: FineTuningParams, tracker: Any) -> float:
        self.raise_if_canceled()
        trial = self.state.done + 1
        self.progress("training", self._fraction(0.0), trial=trial, trials_total=self.state.total, step=0)

        def on_progress(report: dict) -> None:
            fraction = report.get("fraction") or 0.0
            self.progress("training", self._fraction(fraction), trial=trial, trials_total=self.state.total,
                          epoch=report.get("epoch"), step=report.get("step"))

        stop = StopOnRequest(self.should_stop)
        reporter = ProgressReporter(on_progress, total_steps=self.steps_per_trial,
                                    every_n_steps=max(1, min(10, self.steps_per_trial // 20)))
        model = self.fresh_model()
        try:
            outcome = fine_tune(model, self.train, self.test, self.items, params, self.settings, tracker,
                                callbacks=[stop, reporter, TrainingCurves(tracker)], accelerator=self.accelerator)
        finally:
            del model
        if outcome.stopped:
            self.raise_if_canceled()
        tracker.save_evaluation(outcome.metrics_before, outcome.metrics_after, outcome.held_out_per_query,
                                keeper=outcome.keeper)
        return outcome.best_quality

    def on_trial(self, index: int, total: int, best: float | None) -> None:
        """``run_iteration``'s ``on_trial``: a trial ended (trained, skipped or failed)."""
        self.state.done, self.state.total = index, max(total, 1)
        if best is not None and math.isfinite(best):
            self.state.best = best
        fields: dict[str, Any] = {"trial": index, "trials_total": total}
        if self.state.best is not None:
            fields["best_metric"] = self.state.best
        self.progress("training", index / max(total, 1), **fields)

    def _fraction(self, within_trial: float) -> float:
        return min(1.0, (self.state.done + within_trial) / max(self.state.total, 1))
