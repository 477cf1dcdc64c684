"""One iteration of a model line: which parameter sets to train, train them, register the best.

``run_iteration(manager, train_fn, start_ref=..., batch_id=..., settings=...)``:

1. ``manager.start_iteration(start_ref, batch_id)`` — the iteration's MLflow experiment; runs an
   interrupted earlier attempt of the same task left ``RUNNING`` are closed ``KILLED``.
2. Choose the trials:

   - **first iteration of a model line** (the start is not a run of the line and no earlier
     iteration exists): hyperopt TPE over ``space`` for ``max_evals`` trials;
   - **later iterations**: no search — the start run's parameters plus the top
     ``previous_top_n`` parameter sets of the previous iteration (deduplicated, in that order).

3. Each trial: if a FINISHED run with the same parameters exists in this iteration it is
   *skipped* and its stored quality reused (a re-delivered task does not retrain); otherwise
   ``manager.start_run`` → ``train_fn(params, manager)`` → ``manager.finish_run``. A trial that
   raises is closed as FAILED and scores worst; the others go on. ``TrackingUnavailable`` and
   the ``fatal_exceptions`` given (e.g. a cancel) stop the iteration. Memory is released after
   every trial (``gc.collect()``, ``torch.cuda.empty_cache()``).
4. ``manager.finish_iteration()`` chooses the best run, records the choice on the run and the model
   version, and registers the model with the candidate alias; the result carries the choice as read
   back from the registered version (``manager.model_choice``).

``train_fn(params, tracker) -> float`` trains one run: it reports metrics with
``tracker.save_metric`` (the main metric included), stores the model with
``tracker.save_model(model)``, records the held-out metrics before/after with
``tracker.save_evaluation`` and returns the run's quality.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from finetuning.experiments.hyperopt_search import OnTrial, search_with_trials
from finetuning.experiments.mlflow_manager import ExperimentsManager
from finetuning.experiments.provenance import RunContext
from finetuning.experiments.retry import TrackingUnavailable
from finetuning.keeper_verdict import KeeperVerdict
from finetuning.params import FineTuningParams, FineTuningSettings

logger = logging.getLogger(__name__)

TrainFn = Callable[[FineTuningParams, ExperimentsManager], float]


@dataclass
class TrialRecord:
    """What happened to one parameter set in this iteration."""

    params_id: str
    status: Literal["trained", "skipped", "failed"]
    quality: float | None
    run_id: str | None = None
    error: str | None = None


@dataclass
class IterationResult:
    """The outcome of :func:`run_iteration` (the registered model is the task's result)."""

    experiment_id: str
    mode: Literal["search", "continue"]
    best_run_id: str
    best_quality: float | None
    model_uri: str
    registered_name: str
    version: str
    trials: list[TrialRecord] = field(default_factory=list)
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    #: the held-out figure ``best_quality`` is: the one that chose the weights (main metric or a twin)
    quality_metric: str | None = None
    #: which weights the best run kept and why (``keeper.start_kept``: the version holds the start weights)
    keeper: KeeperVerdict | None = None

    @property
    def trained(self) -> int:
        return sum(t.status == "trained" for t in self.trials)

    @property
    def skipped(self) -> int:
        return sum(t.status == "skipped" for t in self.trials)


def release_memory() -> None:
    """Free what the finished trial left behind (Python garbage and the CUDA cache)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def run_iteration(
    manager: ExperimentsManager,
    train_fn: TrainFn,
    *,
    start_ref: str,
    batch_id: str,
    settings: FineTuningSettings,
    space: Mapping[str, Any] | None = None,
    max_evals: int = 10,
    previous_top_n: int = 3,
    seed: int | None = None,
    on_trial: OnTrial | None = None,
    fatal_exceptions: tuple[type[BaseException], ...] = (),
    context: RunContext | None = None,
) -> IterationResult:
    """Run one iteration (see the module docstring) and return what was registered.

    ``context``: the task and data behind it — runs are then named ``t<task>-trial<n>`` and tagged
    with the task, trial, attempt and data, and the batch is each run's dataset input."""
    experiment_id = manager.start_iteration(start_ref, batch_id, context=context)
    manager.end_interrupted_runs()  # runs an earlier attempt of the same task left RUNNING
    fatal = (TrackingUnavailable, *fatal_exceptions)
    records: list[TrialRecord] = []

    def trial(params: FineTuningParams) -> float:
        number = len(records) + 1
        finished = manager.finished_run(params)
        if finished is not None:
            logger.info("skipping trial %s: run %s already finished", params.id(), finished.run_id)
            records.append(TrialRecord(params.id(), "skipped", finished.quality, finished.run_id))
            if finished.quality is None:
                raise ValueError(f"finished run {finished.run_id} has no {manager.main_metric}")
            return finished.quality
        run_id = manager.start_run(params, settings, trial=number)
        try:
            quality = train_fn(params, manager)
        except BaseException as error:
            records.append(TrialRecord(params.id(), "failed", None, run_id, f"{type(error).__name__}: {error}"[:500]))
            try:
                manager.finish_run("FAILED" if isinstance(error, Exception) else "KILLED")
            except Exception as close_error:  # keep the original error
                logger.warning("could not close run %s: %s", run_id, close_error)
                manager.abandon_run()
            raise
        finally:
            release_memory()
        manager.finish_run("FINISHED", quality=quality)
        records.append(TrialRecord(params.id(), "trained", quality, run_id))
        return quality

    start_params = manager.get_start_params()
    previous = manager.get_previous_iteration_top_params(top_n=previous_top_n)
    if start_params is None and not previous:
        mode: Literal["search", "continue"] = "search"
        search_with_trials(
            space,
            trial,
            max_evals,
            seed=settings.seed if seed is None else seed,
            on_trial=on_trial,
            higher_is_better=manager.higher_is_better,
            reraise=fatal,
        )
    else:
        mode = "continue"
        candidates: dict[str, FineTuningParams] = {}
        for params in ([start_params] if start_params else []) + previous:
            candidates.setdefault(params.id(), params)
        best: float | None = None
        for index, params in enumerate(candidates.values(), start=1):
            try:
                quality = trial(params)
                if best is None or manager.is_better(quality, best):
                    best = quality
            except fatal:
                raise
            except Exception as error:  # a failed trial scores worst; the others go on
                logger.warning("trial %s failed: %s", params.id(), error)
            if on_trial is not None:
                on_trial(index, len(candidates), best)

    outcome = manager.finish_iteration()
    choice = manager.model_choice(outcome.name, outcome.version)
    return IterationResult(
        experiment_id=experiment_id,
        mode=mode,
        best_run_id=choice.run_id,
        best_quality=choice.quality,
        model_uri=outcome.model_uri,
        registered_name=outcome.name,
        version=outcome.version,
        trials=records,
        metrics_before=choice.metrics_before,
        metrics_after=choice.metrics_after,
        quality_metric=choice.quality_metric or manager.main_metric,
        keeper=choice.keeper,
    )
