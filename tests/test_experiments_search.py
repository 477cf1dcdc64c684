"""Hyperopt search and search spaces (pure: no MLflow)."""

from __future__ import annotations

import math

import pytest

from finetuning.experiments.hyperopt_search import NoSuccessfulTrial, search, search_with_trials
from finetuning.experiments.search_space import DEFAULT_SPACE, build_space, default_point, params_from_sample
from finetuning.params import ExamplesType, FineTuningParams, FineTuningSettings


def quality(params: FineTuningParams) -> float:
    """A smooth objective with its optimum at query_lr = 1e-3, margin = 0.3."""
    return -((math.log10(params.query_lr) + 3) ** 2) - (params.margin - 0.3) ** 2


SPACE = {"query_lr": {"loguniform": [1e-5, 1e-1]}, "margin": {"uniform": [0.0, 1.0]}}


def test_tpe_finds_a_good_point_and_reports_progress():
    progress = []
    outcome = search_with_trials(SPACE, quality, max_evals=40, seed=1, on_trial=lambda *a: progress.append(a))
    assert [p[0] for p in progress] == list(range(1, 41)) and {p[1] for p in progress} == {40}
    assert outcome.best_quality == max(t.quality for t in outcome.trials)
    assert quality(outcome.best_params) == outcome.best_quality
    assert abs(math.log10(outcome.best_params.query_lr) + 3) < 0.6 and abs(outcome.best_params.margin - 0.3) < 0.25
    bests = [p[2] for p in progress]
    assert bests == sorted(bests)


def test_same_seed_proposes_the_same_trials():
    a = search_with_trials(SPACE, quality, max_evals=5, seed=11)
    b = search_with_trials(SPACE, quality, max_evals=5, seed=11)
    c = search_with_trials(SPACE, quality, max_evals=5, seed=12)
    ids = lambda o: [t.params.id() for t in o.trials]  # noqa: E731
    assert ids(a) == ids(b) != ids(c)


def test_failed_trials_score_worst_and_the_sweep_goes_on():
    calls = []

    def flaky(params: FineTuningParams) -> float:
        calls.append(params)
        if len(calls) % 2 == 0:
            raise RuntimeError("boom")
        if len(calls) == 3:
            return float("nan")
        return quality(params)

    outcome = search_with_trials(SPACE, flaky, max_evals=6, seed=0)
    assert len(calls) == 6
    failed = [t for t in outcome.trials if not t.ok]
    assert len(failed) == 4 and "boom" in failed[0].error and "nan" in failed[1].error
    assert outcome.best_params in [calls[0], calls[4]]


def test_all_failed_is_a_clear_error():
    def broken(params):
        raise ValueError("no data")

    with pytest.raises(NoSuccessfulTrial, match="all 3 trials failed: ValueError: no data"):
        search(SPACE, broken, max_evals=3)


def test_reraised_exceptions_stop_the_sweep():
    class Canceled(Exception):
        pass

    calls = []

    def canceled(params):
        calls.append(params)
        raise Canceled()

    with pytest.raises(Canceled):
        search(SPACE, canceled, max_evals=5, reraise=(Canceled,))
    assert len(calls) == 1


def test_lower_is_better():
    best = search(SPACE, lambda p: -quality(p), max_evals=30, seed=2, higher_is_better=False)
    assert abs(math.log10(best.query_lr) + 3) < 0.8


def test_the_first_trial_is_the_engines_defaults_then_tpe_explores():
    seen: list[FineTuningParams] = []
    outcome = search_with_trials(None, lambda p: seen.append(p) or 0.5, max_evals=3, seed=0)
    first, defaults = seen[0], FineTuningParams()
    for field in ("query_lr", "items_lr", "margin", "temperature", "negative_downsampling", "num_fixed_layers",
                  "not_irrelevant_only", "min_abs_difference_threshold"):
        assert getattr(first, field) == pytest.approx(getattr(defaults, field)), field
    assert first.query_weight_decay == pytest.approx(1e-6)  # 0 clamped into loguniform's range
    assert len({p.query_lr for p in seen}) == 3 and len(outcome.trials) == 3
    # a space that cannot express a default: no fixed first point, TPE samples from the start
    assert default_point({"margin": {"choice": [0.3, 0.4]}}) is None
    assert default_point({"margin": {"uniform": [0.3, 0.4]}}) == {"margin": 0.3}


def test_default_space_samples_valid_params():
    from hyperopt.pyll.stochastic import sample

    space = build_space()
    assert set(space) == set(DEFAULT_SPACE)
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(30):
        params = params_from_sample(sample(space, rng=rng))
        assert isinstance(params.num_fixed_layers, int) and 1e-6 <= params.query_lr <= 1e-4


def test_space_configuration_kinds_and_errors():
    from hyperopt.pyll.stochastic import sample
    import numpy as np

    space = build_space({
        "num_fixed_layers": {"quniform": [0, 3, 1]},
        "margin": {"choice": [0.1, 0.2]},
        "examples_order": {"choice": [["all_examples"], ["positive_examples", "negative_examples"]]},
        "not_irrelevant_only": False,
        "items_lr": {"qloguniform": [1e-5, 1e-3, 1e-5]},
        "min_abs_difference_threshold": {"normal": [0.0, 0.0]},
    })
    params = params_from_sample(sample(space, rng=np.random.default_rng(1)))
    assert params.margin in (0.1, 0.2) and params.not_irrelevant_only is False
    assert isinstance(params.num_fixed_layers, int) and 0 <= params.num_fixed_layers <= 3
    assert all(isinstance(e, ExamplesType) for e in params.examples_order)
    with pytest.raises(ValueError, match="unknown FineTuningParams fields"):
        build_space({"learning_rate": {"uniform": [0, 1]}})
    with pytest.raises(ValueError, match="unknown distribution"):
        build_space({"margin": {"beta": [1, 2]}})
    with pytest.raises(ValueError, match="0 < low < high"):
        build_space({"query_lr": {"loguniform": [0, 1e-3]}})


def test_invalid_samples_are_failed_trials():
    # thresholds sampled out of order fail validation: a failed trial, not a crash
    space = {"min_abs_difference_threshold": {"uniform": [0.5, 2.0]}, "max_abs_difference_threshold": 1.0}
    outcome = search_with_trials(space, lambda p: 1.0, max_evals=8, seed=0)
    assert any(not t.ok and "ValidationError" in t.error for t in outcome.trials)
    assert all(t.params.min_abs_difference_threshold < 1.0 for t in outcome.trials if t.ok)


def test_params_and_settings_round_trip_through_mlflow_strings():
    params = FineTuningParams(num_fixed_layers=2, query_lr=3.3e-5, not_irrelevant_only=False,
                              examples_order=[ExamplesType.positive_examples, ExamplesType.negative_examples])
    strings = params.to_mlflow_params()
    assert all(isinstance(v, str) for v in strings.values())
    assert FineTuningParams.from_mlflow_params(strings) == params
    assert FineTuningParams.from_mlflow_params(strings).id() == params.id()
    settings = FineTuningSettings(num_epochs=3, main_metric="val_mrr@10")
    assert FineTuningSettings.from_mlflow_params(settings.to_mlflow_params()) == settings
