"""Hyper-parameter search with hyperopt TPE over :class:`FineTuningParams`.

``search(space, objective, max_evals, seed)`` runs ``hyperopt.fmin`` with TPE on a seeded
``numpy`` generator (the same seed proposes the same points, which is what lets a re-delivered
task skip the trials that already finished in MLflow). The objective is a plain
``(FineTuningParams) -> float`` quality (higher is better unless ``higher_is_better=False``).

A trial that raises, returns ``None``/NaN, or samples invalid parameters is a *failed* trial:
hyperopt gets ``STATUS_FAIL`` (TPE ignores it), it counts as the worst score, and the sweep goes
on. Exceptions listed in ``reraise`` (infrastructure failures such as ``TrackingUnavailable``,
cancellation) stop the sweep instead. ``on_trial(trial_index, trials_total, best_so_far)`` is
called after every trial (1-based index) for task progress. When the space is given as
configuration (or ``None``), the first trial is the engine's defaults
(:func:`~finetuning.experiments.search_space.default_point`, queued as hyperopt's first trial).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, tpe
from hyperopt.fmin import generate_trials_to_calculate

from finetuning.experiments.search_space import build_space, default_point, is_space, params_from_sample
from finetuning.params import FineTuningParams

logger = logging.getLogger(__name__)

Objective = Callable[[FineTuningParams], float]
OnTrial = Callable[[int, int, float | None], None]


class NoSuccessfulTrial(RuntimeError):
    """Every trial of the search failed."""


@dataclass
class TrialOutcome:
    index: int
    params: FineTuningParams | None
    quality: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SearchOutcome:
    best_params: FineTuningParams
    best_quality: float
    trials: list[TrialOutcome] = field(default_factory=list)


def search_with_trials(
    space: Mapping[str, Any] | None,
    objective: Objective,
    max_evals: int,
    seed: int = 0,
    on_trial: OnTrial | None = None,
    *,
    higher_is_better: bool = True,
    reraise: tuple[type[BaseException], ...] = (),
) -> SearchOutcome:
    """Run the TPE search; returns the best parameters, their quality and every trial."""
    if max_evals < 1:
        raise ValueError("max_evals must be >= 1")
    hp_space = space if is_space(space) else build_space(space)
    start = None if is_space(space) else default_point(space)
    outcomes: list[TrialOutcome] = []
    best: list[Any] = [None, None]  # params, quality

    def evaluate(sample: dict[str, Any]) -> dict[str, Any]:
        index = len(outcomes) + 1
        params: FineTuningParams | None = None
        try:
            params = params_from_sample(sample)
            quality = objective(params)
            if quality is None or math.isnan(float(quality)):
                raise ValueError(f"objective returned {quality!r}")
            quality = float(quality)
        except reraise:
            raise
        except Exception as error:  # a failed trial (invalid sample included): worst score, sweep goes on
            logger.warning("trial %d failed: %s: %s", index, type(error).__name__, error)
            outcomes.append(TrialOutcome(index, params, None, f"{type(error).__name__}: {error}"[:500]))
            _report(on_trial, index, max_evals, best[1])
            return {"status": STATUS_FAIL, "loss": math.inf}
        outcomes.append(TrialOutcome(index, params, quality))
        if best[1] is None or (quality > best[1] if higher_is_better else quality < best[1]):
            best[0], best[1] = params, quality
        _report(on_trial, index, max_evals, best[1])
        return {"status": STATUS_OK, "loss": -quality if higher_is_better else quality}

    # hyperopt evaluates a queued point first (fmin's own points_to_evaluate is ignored once trials are given)
    trials = generate_trials_to_calculate([start]) if start else Trials()
    try:
        fmin(
            evaluate,
            hp_space,
            algo=tpe.suggest,
            max_evals=max_evals,
            trials=trials,
            rstate=np.random.default_rng(seed),
            show_progressbar=False,
            # a queued first point is not counted against max_evals by fmin: stop on our own count
            early_stop_fn=lambda _trials, *args: (len(outcomes) >= max_evals, args),
        )
    except Exception as error:
        if best[0] is None and type(error).__name__ == "AllTrialsFailed":
            raise NoSuccessfulTrial(_all_failed(outcomes)) from error
        raise
    if best[0] is None:
        raise NoSuccessfulTrial(_all_failed(outcomes))
    return SearchOutcome(best[0], best[1], outcomes)


def search(
    space: Mapping[str, Any] | None,
    objective: Objective,
    max_evals: int,
    seed: int = 0,
    on_trial: OnTrial | None = None,
    *,
    higher_is_better: bool = True,
    reraise: tuple[type[BaseException], ...] = (),
) -> FineTuningParams:
    """The best ``FineTuningParams`` found by TPE in ``max_evals`` trials (see module docstring)."""
    return search_with_trials(
        space, objective, max_evals, seed, on_trial, higher_is_better=higher_is_better, reraise=reraise
    ).best_params


def _report(on_trial: OnTrial | None, index: int, total: int, best: float | None) -> None:
    if on_trial is not None:
        on_trial(index, total, best)


def _all_failed(outcomes: list[TrialOutcome]) -> str:
    errors = "; ".join(sorted({o.error or "" for o in outcomes}))[:1000]
    return f"all {len(outcomes)} trials failed: {errors}"
