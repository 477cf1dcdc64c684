"""Experiments over MLflow: iterations, runs, portable models, registry, hyperopt search.

- :mod:`.mlflow_manager` — ``ExperimentsManager`` (the ``ExperimentTracker`` given to the fine-tuner),
  composed of :mod:`.iterations`, :mod:`.runs` and :mod:`.registry` over :mod:`.client` (retrying proxy);
  :mod:`.records` — tags, the recorded ``ModelChoice``, filter literals
- :mod:`.model_logging` — portable models (``sentence_transformers`` flavour for one tower, else a
  pyfunc wrapper shipping its code; PyPI requirements); :mod:`.model_card` — README and version description
- :mod:`.provenance` — ``RunContext`` / ``DataSummary``: run names, run tags, the batch as dataset input
- :mod:`.naming` — experiment / registered-model names and tags
- :mod:`.search_space`, :mod:`.hyperopt_search` — TPE over ``FineTuningParams``
- :mod:`.iteration` — ``run_iteration``: search or continue, skip finished trials, register the best
- :mod:`.retry` — bounded retries (``TrackingRetryPolicy``) and ``TrackingUnavailable``
"""

from finetuning.experiments.hyperopt_search import NoSuccessfulTrial, search, search_with_trials
from finetuning.experiments.iteration import IterationResult, TrialRecord, release_memory, run_iteration
from finetuning.experiments.mlflow_manager import (
    BLUE_ALIAS,
    CANDIDATE_ALIAS,
    ExperimentsManager,
    FinishedRun,
    IterationOutcome,
    ModelChoice,
    NoModelLogged,
)
from finetuning.experiments.retry import TrackingRetryPolicy, TrackingUnavailable
from finetuning.experiments.search_space import DEFAULT_SPACE, build_space, params_from_sample

__all__ = [
    "BLUE_ALIAS",
    "CANDIDATE_ALIAS",
    "DEFAULT_SPACE",
    "ExperimentsManager",
    "FinishedRun",
    "IterationOutcome",
    "IterationResult",
    "ModelChoice",
    "NoModelLogged",
    "NoSuccessfulTrial",
    "TrackingRetryPolicy",
    "TrackingUnavailable",
    "TrialRecord",
    "build_space",
    "params_from_sample",
    "release_memory",
    "run_iteration",
    "search",
    "search_with_trials",
]
