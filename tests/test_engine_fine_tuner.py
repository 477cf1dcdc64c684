"""EmbeddingsFineTuner seed methods, the callbacks and fine_tune on a tiny model."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from finetuning.callbacks import KeepBestWeights, ProgressReporter, StopOnRequest
from finetuning.fine_tuner import EmbeddingsFineTuner
from finetuning.inputs import ItemsSet, TextQueryRetriever, TrainTestSplitter, sessions_to_inputs
from finetuning.losses import ClickInfoNCELoss, ProbMarginRankingLoss
from finetuning.metrics.distance_shift import DistanceShift
from finetuning.metrics.held_out import HeldOutRetrievalMetrics
from finetuning.models.registry import load_model
from finetuning.params import FineTuningParams, FineTuningSettings
from finetuning.tracking.in_memory import InMemoryTracker
from finetuning.train import fine_tune
from worker.jobs.fine_tuning.training import planned_steps
from tests.fixtures.engine import synthetic_world


def _tuner(model, items, **kw):
    return EmbeddingsFineTuner(
        model, ItemsSet(items), TextQueryRetriever(), ClickInfoNCELoss(), FineTuningParams(), InMemoryTracker(), **kw
    )


@pytest.fixture
def world(tiny_model_dir):
    items, sessions = synthetic_world(n_sessions=120)
    inputs = sessions_to_inputs(sessions)
    return load_model(tiny_model_dir), items, inputs


def test_preprocess_inputs_computes_missing_ranks_only(world):
    model, items, inputs = world
    tuner = _tuner(model, items)
    given = inputs[0].model_copy(deep=True)
    missing_none = inputs[1].model_copy(update={"ranks": None})
    missing_empty = inputs[2].model_copy(update={"ranks": {}})
    tuner.preprocess_inputs([given, missing_none, missing_empty])
    assert given.ranks == inputs[0].ranks
    for item in (missing_none, missing_empty):
        assert sorted(item.ranks) == sorted(item.results)
        assert sorted(item.ranks.values()) == list(range(1, len(item.results) + 1))
        scores = model.encode_queries([item.query]) @ model.encode_items([items[o] for o in item.results]).T
        best = item.results[int(scores.argmax())]
        assert item.ranks[best] == 1


@pytest.mark.parametrize("step_size,gamma", [(0, 0.9), (-3, 0.9), (2.5, 0.9), (10, 0.0), (10, 1.0), (10, 1.5)])
def test_invalid_scheduler_params_raise(world, step_size, gamma):
    model, items, _ = world
    with pytest.raises(ValueError):
        _tuner(model, items, step_size=step_size, gamma=gamma)
    tuner = _tuner(model, items)
    tuner.step_size, tuner.gamma = step_size, gamma
    with pytest.raises(ValueError):
        tuner.configure_optimizers()


def test_one_optimizer_for_shared_towers_two_for_separate(world, tiny_two_tower_dir):
    model, items, _ = world
    optimizers, schedulers = _tuner(model, items).configure_optimizers()
    assert len(optimizers) == 1 and len(schedulers) == 1
    two = load_model(tiny_two_tower_dir)
    optimizers, schedulers = _tuner(two, items).configure_optimizers()
    assert len(optimizers) == 2 and len(schedulers) == 2
    query_ids = {id(p) for g in optimizers[0].param_groups for p in g["params"]}
    items_ids = {id(p) for g in optimizers[1].param_groups for p in g["params"]}
    assert query_ids.isdisjoint(items_ids)


def test_schedulers_really_step_during_training(world, tiny_two_tower_dir):
    _, items, inputs = world
    model = load_model(tiny_two_tower_dir)
    tuner = _tuner(model, items, step_size=2, gamma=0.5)
    trainer = pl.Trainer(accelerator="cpu", max_steps=8, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(tuner, DataLoader(inputs, batch_size=8, collate_fn=list))
    lrs = [opt.param_groups[0]["lr"] for opt in trainer.optimizers]
    # 8 optimizer steps over 2 optimizers = 4 batches, each scheduler stepped 4 times: lr * 0.5**2
    lr = FineTuningParams().query_lr
    assert lrs == pytest.approx([lr * 0.25, lr * 0.25])


def test_linear_decay_composes_with_the_step_lr(world):
    """decay_steps chains a linear fall to zero with the seed's StepLR (both really apply)."""
    model, items, inputs = world
    tuner = _tuner(model, items, step_size=2, gamma=0.5, decay_steps=4)
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(tuner, DataLoader(inputs, batch_size=8, collate_fn=list))
    # after 3 batches: StepLR halved once (0.5), linear at 1 - 3/4 = 0.25
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(FineTuningParams().query_lr * 0.5 * 0.25)
    with pytest.raises(ValueError, match="decay_steps"):
        _tuner(model, items, decay_steps=0)


class LrProbe(pl.Callback):
    """Records the first optimizer's learning rate after every training batch."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_fine_tune_decays_the_learning_rate_to_zero_over_the_run(world):
    model, items, inputs = world
    train, test = TrainTestSplitter(0.3)(inputs)
    settings = FineTuningSettings(batch_size=2, num_epochs=2)
    decaying, constant = LrProbe(), LrProbe()
    fine_tune(model, train, test, ItemsSet(items), FineTuningParams(query_lr=1e-3), settings, InMemoryTracker(),
              callbacks=[decaying], accelerator="cpu", save_model=False)
    lrs = decaying.lrs
    assert len(lrs) >= 4 and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and lrs[0] == pytest.approx(1e-3 * (1 - 1 / len(lrs)))
    fine_tune(model, train, test, ItemsSet(items), FineTuningParams(query_lr=1e-3), settings.model_copy(update={"lr_decay": "none"}),
              InMemoryTracker(), callbacks=[constant], accelerator="cpu", save_model=False)
    assert constant.lrs and set(constant.lrs) == {1e-3}


def test_validation_step_accepts_a_single_tuple_and_epoch_end_mean_resets(world):
    model, items, inputs = world
    tuner = _tuner(model, items, metric_calculators=[DistanceShift()])
    first = tuner.validation_step((inputs[0], None), 0)
    second = tuner.validation_step([inputs[1], inputs[2]], 1)
    assert first.ndim == 0 and second.ndim == 0
    results = tuner._validation_results()
    assert results["val_loss"] == pytest.approx((float(first) * 1 + float(second) * 2) / 3, rel=1e-5)
    assert "val_distance_shift" in results
    assert tuner._val_loss_count == 0 and math.isnan(tuner._validation_results()["val_loss"])


def test_on_validation_epoch_end_logs_what_early_stopping_monitors(world):
    model, items, inputs = world
    train, test = TrainTestSplitter(0.3)(inputs)
    tracker = InMemoryTracker()
    tuner = EmbeddingsFineTuner(
        model, ItemsSet(items), TextQueryRetriever(), ProbMarginRankingLoss(), FineTuningParams(), tracker,
        metric_calculators=[HeldOutRetrievalMetrics()],
    )
    early = pl.callbacks.EarlyStopping(monitor="val_loss", patience=100)
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, val_check_interval=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[early], num_sanity_val_steps=0)
    trainer.fit(tuner, DataLoader(train, batch_size=8, collate_fn=list), DataLoader(test, batch_size=8, collate_fn=list))
    assert "val_loss" in trainer.callback_metrics and "val_ndcg@10" in trainer.callback_metrics
    assert early.best_score is not None and torch.isfinite(early.best_score)
    assert tracker.values("val_ndcg@10") and not math.isnan(tracker.get_quality())


def test_create_resolves_settings_names(world):
    model, items, _ = world
    settings = FineTuningSettings(loss_func="cosine_prob_margin", metric_calculators=["retrieval"], ranker="dot", confidence_calculator="dummy")
    tuner = EmbeddingsFineTuner.create(model, settings, ItemsSet(items), TextQueryRetriever(), FineTuningParams(margin=0.2), InMemoryTracker())
    assert type(tuner.loss_func).__name__ == "CosineProbMarginRankingLoss" and tuner.loss_func.base_margin == 0.2
    assert isinstance(tuner.metric_calculators[0], HeldOutRetrievalMetrics)
    assert tuner.ranker.__name__ == "dot"
    with pytest.raises(KeyError):
        EmbeddingsFineTuner.create(model, settings.model_copy(update={"loss_func": "nope"}), ItemsSet(items), TextQueryRetriever(), FineTuningParams(), InMemoryTracker())


@pytest.mark.slow
def test_fine_tune_learns_reports_progress_and_keeps_the_best(tiny_model_dir):
    items, sessions = synthetic_world(n_sessions=160)
    train, test = TrainTestSplitter(0.3)(sessions_to_inputs(sessions))
    model = load_model(tiny_model_dir)
    n_queries = len({i.query for i in train})  # batches hold batch_size distinct queries
    reports: list[dict] = []
    tracker = InMemoryTracker()
    outcome = fine_tune(
        # the synthetic world holds out 5 queries, fewer than the burden of proof's default 10
        model, train, test, ItemsSet(items), FineTuningParams(query_lr=1e-3),
        FineTuningSettings(batch_size=2, num_epochs=2, test_each_n_sessions=8, keep_min_queries=2),
        tracker, callbacks=[ProgressReporter(reports.append, total_steps=2 * math.ceil(n_queries / 2), every_n_steps=5)], accelerator="cpu",
    )
    before, after = outcome.metrics_before["val_ndcg@10"], outcome.metrics_after["val_ndcg@10"]
    assert after > before + 0.1, (before, after)
    assert outcome.best_quality == pytest.approx(after)
    assert outcome.model_saved and tracker.saved_models
    # the quality gate's input: per held-out query, start and kept weights, pairing up with the means
    per_before, per_after = outcome.per_query_before, outcome.per_query_after
    assert per_before and len(per_before) == len(per_after) == len({i.query for i in test})
    assert sum(per_before) / len(per_before) == pytest.approx(before)
    assert sum(per_after) / len(per_after) == pytest.approx(after)
    # every validated metric pairs up the same way, the own-results judge of the quality gate included
    own_before, own_after = outcome.held_out_per_query["val_own_ndcg@10"]
    assert len(own_before) == len(own_after) == len(per_before)
    assert sum(own_after) / len(own_after) == pytest.approx(outcome.metrics_after["val_own_ndcg@10"])
    # the weights left in the model are the best ones, not the last
    from finetuning.metrics.base import MetricContext
    from finetuning.metrics.held_out import evaluate_sessions
    from finetuning.rankers import cosine

    from finetuning import resolve

    # the settings' default click model, fitted as fine_tune does
    graded_by = resolve.confidence_calculator(FineTuningSettings().confidence_calculator).fit(train)
    now = evaluate_sessions(test, MetricContext(model, ItemsSet(items), TextQueryRetriever(), cosine, graded_by))["ndcg@10"]
    assert now == pytest.approx(after, abs=1e-4)
    assert any(r["stage"] == "validation" and "val_ndcg@10" in r for r in reports)
    assert reports[-1]["fraction"] is not None and 0 < reports[-1]["fraction"] <= 1


def test_separate_towers_report_validation_at_training_steps(tiny_two_tower_dir):
    """Lightning counts both optimizers' steps; validations and the keeper's choice count batches."""
    items, sessions = synthetic_world(n_sessions=60)
    train, test = TrainTestSplitter(0.3)(sessions_to_inputs(sessions))
    tracker = InMemoryTracker()
    outcome = fine_tune(load_model(tiny_two_tower_dir), train, test, ItemsSet(items), FineTuningParams(query_lr=1e-3),
                        FineTuningSettings(batch_size=2, test_each_n_sessions=4), tracker,
                        accelerator="cpu", save_model=False)
    val_steps = sorted({m.step for m in tracker.metrics if m.name == "val_ndcg@10"})
    assert outcome.steps == math.ceil(len({i.query for i in train}) / 2)
    assert val_steps[0] == 0 and val_steps[-1] == outcome.steps and len(val_steps) > 2, val_steps
    assert outcome.best_step is not None and 0 <= outcome.best_step <= outcome.steps


def test_stop_on_request_stops_cleanly(tiny_model_dir):
    items, sessions = synthetic_world(n_sessions=80)
    train, test = TrainTestSplitter(0.3)(sessions_to_inputs(sessions))
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    outcome = fine_tune(
        load_model(tiny_model_dir), train, test, ItemsSet(items), FineTuningParams(), FineTuningSettings(batch_size=1, num_epochs=3),
        InMemoryTracker(), callbacks=[StopOnRequest(should_stop)], accelerator="cpu",
    )
    assert outcome.stopped and outcome.steps == 2


def _perturbed_keeper(tiny_model_dir, start_per_query=None, **kwargs):
    """A keeper seeded with a model's start weights, then the model's weights changed (a 'trained' one)."""
    model = load_model(tiny_model_dir)
    keeper = KeepBestWeights("val_ndcg@10", "max", initial_score=0.9, initial_per_query=start_per_query, **kwargs)
    keeper.on_fit_start(None, type("M", (), {"model": model})())
    start = model.encode_queries(["red"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model, keeper, start, model.encode_queries(["red"])


def test_keep_best_weights_keeps_the_start_when_the_candidate_is_clearly_worse(tiny_model_dir):
    start_scores = [0.9, 0.8, 1.0, 0.9]
    model, keeper, start, _ = _perturbed_keeper(tiny_model_dir, start_scores)
    assert keeper.consider(0.5, model, 10, per_query=[0.5, 0.4, 0.6, 0.5])  # the best trained so far
    assert not keeper.consider(0.4, model, 12)  # a worse checkpoint does not replace it
    keeper.restore(model)
    assert torch.allclose(model.encode_queries(["red"]), start, atol=1e-6)
    assert (keeper.decision, keeper.best_step, keeper.best_score) == ("start kept", 0, 0.9)


def test_keep_best_weights_keeps_the_start_when_the_candidate_is_better_only_within_the_noise(tiny_model_dir):
    # +0.037 on average over 12 queries, but per-query differences of ±0.1: 1.56 standard errors
    start_scores = [0.9, 0.7, 0.95, 0.8, 0.85, 0.75] * 2
    trained = [1.0, 0.6, 0.95, 0.9, 0.85, 0.87] * 2
    model, keeper, start, _ = _perturbed_keeper(tiny_model_dir, start_scores)
    mean_score = sum(trained) / len(trained)
    assert keeper.consider(mean_score, model, 23, {"val_ndcg@10": mean_score}, trained)
    keeper.restore(model)
    assert keeper.proof.n == 12 and keeper.proof.mean == pytest.approx(0.0367, abs=1e-4) and 1.5 < keeper.proof.z < 1.645
    assert (keeper.decision, keeper.best_step, keeper.best_score) == ("start kept", 0, 0.9)
    # the verdict names the checkpoint that was refused, not the start that was kept
    verdict = keeper.verdict()
    assert verdict.start_kept and verdict.candidate_step == 23 and verdict.proof == keeper.proof
    assert (verdict.metric, verdict.prove_z, verdict.min_queries) == ("val_ndcg@10", 1.645, 10)
    assert torch.allclose(model.encode_queries(["red"]), start, atol=1e-6)


def test_keep_best_weights_keeps_a_candidate_proven_better_on_enough_queries(tiny_model_dir):
    start_scores = [0.9, 0.7, 0.95, 0.8, 0.85, 0.75] * 2
    trained = [0.95, 0.8, 0.97, 0.85, 0.9, 0.76] * 2   # better on every query
    model, keeper, _, changed = _perturbed_keeper(tiny_model_dir, start_scores)
    mean_score = sum(trained) / len(trained)
    keeper.consider(mean_score, model, 23, {"val_ndcg@10": mean_score}, trained)
    keeper.restore(model)
    assert keeper.proof.z > 3 and (keeper.decision, keeper.best_step) == ("candidate beats start", 23)
    assert not keeper.verdict().start_kept and keeper.verdict().candidate_step == 23
    assert torch.allclose(model.encode_queries(["red"]), changed, atol=1e-6)

    # the same gain on fewer queries than min_queries proves nothing
    model, keeper, start, _ = _perturbed_keeper(tiny_model_dir, start_scores[:6], min_queries=10)
    keeper.consider(mean_score, model, 23, {"val_ndcg@10": mean_score}, trained[:6])
    keeper.restore(model)
    assert keeper.decision == "start kept" and torch.allclose(model.encode_queries(["red"]), start, atol=1e-6)


def test_keep_best_weights_uses_students_t_at_the_level_prove_z_names(tiny_model_dir):
    """At 15 queries the one-sided 95 % bar is t = 1.76, not the normal 1.645: a z of 1.7 is not a proof."""
    start_scores = [0.5] * 15
    diffs = [0.1] * 10 + [-0.1] * 4 + [0.0]  # z 1.70
    model, keeper, _, _ = _perturbed_keeper(tiny_model_dir, start_scores)
    trained = [s + d for s, d in zip(start_scores, diffs)]
    keeper.consider(sum(trained) / 15, model, 4, per_query=trained)
    keeper.restore(model)
    assert 1.645 < keeper.proof.z < 1.761 and keeper.decision == "start kept"

    model, keeper, _, _ = _perturbed_keeper(tiny_model_dir, start_scores, prove_z=1.0)  # 84 %: t 1.03 at 14 df
    keeper.consider(sum(trained) / 15, model, 4, per_query=trained)
    keeper.restore(model)
    assert keeper.decision == "candidate beats start"


def test_keep_best_weights_proves_on_the_proof_metric_and_a_negative_level_accepts_the_not_worse(tiny_model_dir):
    start = {"val_ndcg@10": [0.9] * 10, "val_own_ndcg@10": [0.5, 0.6] * 5}
    model, keeper, _, _ = _perturbed_keeper(tiny_model_dir, proof_metric="val_own_ndcg@10")
    keeper.start_per_query_by_metric = start
    # chosen by the shared pool (a little lower there), proven on the own-results figure
    keeper.consider(0.85, model, 3, per_query_by_metric={"val_ndcg@10": [0.85] * 10, "val_own_ndcg@10": [0.6, 0.7] * 5})
    keeper.restore(model)
    assert keeper.decision == "candidate beats start" and keeper.proof.mean == pytest.approx(0.1)

    model, keeper, _, changed = _perturbed_keeper(tiny_model_dir, [0.9, 0.7, 0.95, 0.8, 0.85, 0.75] * 2, prove_z=-1.0)
    keeper.consider(0.8, model, 5, per_query=[1.0, 0.6, 0.95, 0.9, 0.75, 0.72] * 2)   # 0.005 lower, ±0.1 per query
    keeper.restore(model)
    assert keeper.decision == "candidate beats start" and torch.allclose(model.encode_queries(["red"]), changed, atol=1e-6)


def test_keep_best_weights_takes_the_strongest_of_its_witnesses_at_a_bar_for_all(tiny_model_dir):
    """The exploration judge (12 queries, no gain it can show) and both judges as one (30 queries, the
    first 12 the exploration judge's, a steady gain): the second proves, its bar above its own t."""
    rand_start, both_start = [0.5, 0.7] * 6, [0.6, 0.8, 0.7] * 10
    rand_after = [0.55, 0.65] * 6
    both_after = [s + 0.02 + 0.01 * (i % 3 - 1) for i, s in enumerate(both_start)]
    witnesses = ("val_rand_ndcg@10", "val_both_ndcg@10")
    model, keeper, _, _ = _perturbed_keeper(tiny_model_dir, proof_metric="val_both_ndcg@10", witnesses=witnesses)
    keeper.start_per_query_by_metric = {"val_rand_ndcg@10": rand_start, "val_both_ndcg@10": both_start}
    keeper.consider(0.92, model, 7, per_query_by_metric={"val_rand_ndcg@10": rand_after, "val_both_ndcg@10": both_after})
    keeper.restore(model)
    verdict = keeper.verdict()
    assert keeper.decision == "candidate beats start" and verdict.metric == "val_both_ndcg@10"
    assert verdict.proof.n == 30 and verdict.proof.witnesses == 2 and verdict.proof.bar_z > 1.699  # t at 29 df


def test_keep_best_weights_is_strict_without_per_query_values(tiny_model_dir):
    model, keeper, start, _ = _perturbed_keeper(tiny_model_dir)  # no per-query values for the start
    keeper.consider(0.899, model, 5, per_query=[0.899] * 4)
    keeper.restore(model)
    assert keeper.decision == "start kept" and keeper.proof is None
    assert torch.allclose(model.encode_queries(["red"]), start, atol=1e-6)


def test_keep_best_weights_takes_a_better_candidate_and_handles_min_mode(tiny_model_dir):
    model, keeper, _, changed = _perturbed_keeper(tiny_model_dir)
    keeper.consider(0.95, model, 7)
    keeper.restore(model)
    assert keeper.decision == "candidate beats start" and torch.allclose(model.encode_queries(["red"]), changed, atol=1e-6)

    loss_keeper = KeepBestWeights("val_loss", "min", initial_score=1.0, initial_per_query=[1.0, 1.2, 0.8])
    loss_keeper.consider(1.05, torch.nn.Linear(1, 1), 3, per_query=[1.0, 1.3, 0.85])
    assert loss_keeper.paired_test().mean == pytest.approx(-0.05)  # higher loss is worse: the sign follows the mode


def test_small_log_gets_enough_steps_per_epoch(tiny_model_dir):
    """A log with few queries trains in smaller batches so that an epoch has ``min_steps_per_epoch``
    optimizer steps; with the rule off it makes ceil(queries / batch_size) steps."""
    items, sessions = synthetic_world(n_sessions=80)
    train, test = TrainTestSplitter(0.3)(sessions_to_inputs(sessions))
    queries = len({i.query for i in train})
    steps = {}
    for min_steps in (0, 6):
        settings = FineTuningSettings(batch_size=32, min_steps_per_epoch=min_steps, min_batch_size=1, test_each_n_sessions=0)
        outcome = fine_tune(load_model(tiny_model_dir), train, test, ItemsSet(items), FineTuningParams(), settings,
                            InMemoryTracker(), accelerator="cpu", save_model=False)
        steps[min_steps] = outcome.steps
        # the worker's progress plan counts the batches fine_tune made
        assert planned_steps(train, settings) == outcome.steps
    assert steps[0] == math.ceil(queries / 32)
    assert steps[6] == math.ceil(queries / (queries // 6)) >= 6, (queries, steps)


def test_exploration_sessions_of_enough_held_out_queries_choose_the_weights(tiny_model_dir):
    """With exploration sessions (results shown in a random order) for at least 10 held-out queries,
    their figure is the one that chooses the kept weights; without them, the main metric."""
    items, sessions = synthetic_world(n_sessions=160)
    train, test = TrainTestSplitter(0.3)(sessions_to_inputs(sessions))
    explored = [item.model_copy(update={"query": f"{item.query} {n % 4}", "randomized": True}) for n, item in enumerate(test)]
    settings = FineTuningSettings(batch_size=2, num_epochs=1, test_each_n_sessions=8)
    tracker = InMemoryTracker()
    outcome = fine_tune(load_model(tiny_model_dir), train, explored, ItemsSet(items), FineTuningParams(query_lr=1e-3), settings,
                        tracker, accelerator="cpu", save_model=False)
    assert outcome.main_metric == tracker.quality_metric == "val_rand_ndcg@10"
    before, after = outcome.held_out_per_query["val_rand_ndcg@10"]
    assert len(before) == len(after) == len({item.query for item in explored}) >= 10
    assert outcome.best_quality == pytest.approx(outcome.metrics_after["val_rand_ndcg@10"])
    # two witnesses may prove the weights, the exploration judge and both judges as one (per held-out
    # query the mean of its own-results and exploration figures), at a bar set for the two
    assert outcome.keeper.metric in ("val_rand_ndcg@10", "val_both_ndcg@10")
    assert outcome.keeper.proof.witnesses == 2 and outcome.keeper.proof.bar_z is not None
    own_before, _ = outcome.held_out_per_query["val_own_ndcg@10"]
    both_before, both_after = outcome.held_out_per_query["val_both_ndcg@10"]
    assert len(both_before) == len(both_after) >= len(own_before)
    assert outcome.metrics_before["val_both_ndcg@10"] == pytest.approx(sum(both_before) / len(both_before))
    # the same held-out sessions without the mark: nothing to judge by exploration
    plain_tracker = InMemoryTracker()
    plain = fine_tune(load_model(tiny_model_dir), train, [item.model_copy(update={"randomized": False}) for item in explored],
                      ItemsSet(items), FineTuningParams(query_lr=1e-3), settings.model_copy(update={"max_steps": 2}), plain_tracker,
                      accelerator="cpu", save_model=False)
    assert plain.main_metric == plain_tracker.quality_metric == "val_ndcg@10" and "val_rand_ndcg@10" not in plain.metrics_before
    assert plain.keeper.metric == "val_own_ndcg@10" and "val_both_ndcg@10" not in plain.metrics_before
