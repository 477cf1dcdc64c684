"""Held-out validation pools: shared by all held-out queries, or each query's own shown results."""

from __future__ import annotations

import pytest
import torch

from finetuning import resolve
from finetuning.inputs import FineTuningInput, ItemsSet, TextQueryRetriever
from finetuning.inputs.input import ClickEvent
from finetuning.metrics.base import MetricContext
from finetuning.metrics.held_out import HeldOutRetrievalMetrics, combine_judges, evaluate_sessions_per_query, judge_metric, proof_metric
from finetuning.rankers import cosine

# query "a" is close to its clicked a1 but closer still to b1, which only query "b" was shown
VECTORS = {"a": [1.0, 0.0], "b": [0.0, 1.0], "a1": [0.9, 0.1], "a2": [0.2, 0.9], "b1": [1.0, 0.05], "b2": [0.5, -1.0]}


class FixedModel:
    def encode_queries(self, queries, batch_size=64):
        return torch.tensor([VECTORS[q] for q in queries])

    def encode_items(self, items, batch_size=64):
        return torch.tensor([VECTORS[i] for i in items])


def _session(query, results, clicked):
    return FineTuningInput(query=query, results=results, events=[ClickEvent(object_id=clicked)],
                           ranks={o: r + 1 for r, o in enumerate(results)})


def test_own_results_pool_does_not_count_another_querys_result_against_a_query():
    sessions = [_session("a", ["a1", "a2"], "a1"), _session("b", ["b1", "b2"], "b1")]
    context = MetricContext(FixedModel(), ItemsSet({i: i for i in ("a1", "a2", "b1", "b2")}), TextQueryRetriever(), cosine)
    shared = evaluate_sessions_per_query(sessions, context, ks=(10,))
    own = evaluate_sessions_per_query(sessions, context, ks=(10,), own_results_only=True)
    # shared pool: b1 ranks first for "a" and counts as irrelevant; own pool: "a" sees a1, a2 only
    assert shared["ndcg@10"][0] < 1.0 and own["ndcg@10"] == [1.0, 1.0]


def test_the_own_results_calculator_is_a_setting_name():
    calculator = resolve.metric_calculators(["retrieval_own_results"])[0]
    assert isinstance(calculator, HeldOutRetrievalMetrics) and calculator.own_results_only
    # its figures have their own names, so both pools can be validated together
    sessions = [_session("a", ["a1", "a2"], "a1"), _session("b", ["b1", "b2"], "b1")]
    context = MetricContext(FixedModel(), ItemsSet({i: i for i in ("a1", "a2", "b1", "b2")}), TextQueryRetriever(), cosine)
    calculator.update(None, sessions)
    assert calculator.compute(context)["own_ndcg@10"] == 1.0 and calculator.last_per_query["own_ndcg@10"] == [1.0, 1.0]
    assert not resolve.metric_calculators(["retrieval"])[0].own_results_only
    with pytest.raises(KeyError):
        resolve.metric_calculators(["retrieval_own"])


def test_the_randomized_judge_reads_exploration_sessions_only():
    """Users click the top result whatever it is in the start model's order (a1 over a2), but in the
    sessions that showed the results in a random order they click a2: only those sessions judge."""
    def shown(order, clicked, randomized, query="a"):
        return FineTuningInput(query=query, results=order, events=[ClickEvent(object_id=clicked)],
                               ranks={o: r + 1 for r, o in enumerate(order)}, randomized=randomized)

    sessions = [shown(["a1", "a2"], "a1", False) for _ in range(8)]
    sessions += [shown(["a2", "a1"], "a2", True), shown(["a1", "a2"], "a2", True), shown(["b1", "b2"], "b1", False, "b")]
    context = MetricContext(FixedModel(), ItemsSet({i: i for i in ("a1", "a2", "b1", "b2")}), TextQueryRetriever(), cosine)
    registered, own = resolve.metric_calculators(["retrieval_randomized", "retrieval_own_results"])
    randomized = HeldOutRetrievalMetrics(own_results_only=True, name_prefix="rand_", grade_all_shown=True, prior_by_rank=False,
                                         randomized_only=True)
    for calculator in (randomized, own, registered):
        calculator.update(None, sessions)
    # FixedModel ranks a1 first for "a": the own-results judge (every session) agrees with it, the
    # randomized judge does not; query "b" has no exploration session, so it is not judged
    assert own.compute(context)["own_ndcg@10"] == 1.0 and len(own.last_per_query["own_ndcg@10"]) == 2
    figures = randomized.compute(context)
    assert figures["rand_ndcg@10"] < 0.7 and randomized.last_per_query["rand_ndcg@10"] == [figures["rand_ndcg@10"]]
    # the registered judge needs 10 judged queries (the quality gate's minimum): one records nothing
    assert registered.compute(context) == {} and registered.last_per_query == {}

    # both judges as one: per query the mean of the judges it has ("a": own and rand, "b": own only)
    assert own.last_queries == ["a", "b"] and randomized.last_queries == ["a"]
    per_query = {f"val_{name}": values for c in (own, randomized) for name, values in c.last_per_query.items()}
    queries = {f"val_{name}": c.last_queries for c in (own, randomized) for name in c.last_per_query}
    both = combine_judges(per_query, queries)["val_both_ndcg@10"]
    own_a, own_b = own.last_per_query["own_ndcg@10"]
    assert both == pytest.approx([(own_a + figures["rand_ndcg@10"]) / 2, own_b])
    assert combine_judges({"val_own_ndcg@10": [1.0]}, {"val_own_ndcg@10": ["a"]}) == {}  # one judge: nothing to combine


def test_the_exploration_judge_chooses_when_recorded():
    assert judge_metric("val_ndcg@10", {"val_ndcg@10": 0.7, "val_rand_ndcg@10": 0.6}) == "val_rand_ndcg@10"
    assert judge_metric("val_ndcg@10", {"val_ndcg@10": 0.7, "val_own_ndcg@10": 0.6}) == "val_ndcg@10"
    assert judge_metric("val_loss", {"val_loss": 0.7, "val_rand_ndcg@10": 0.6}) == "val_loss"


def test_trained_weights_prove_themselves_on_both_judges_when_exploration_is_recorded():
    recorded = {"val_ndcg@10": 0.7, "val_own_ndcg@10": 0.6, "val_rand_ndcg@10": 0.5, "val_both_ndcg@10": 0.55}
    assert proof_metric("val_ndcg@10", recorded) == "val_both_ndcg@10"
    assert proof_metric("val_ndcg@10", {"val_ndcg@10": 0.7, "val_own_ndcg@10": 0.6}) == "val_own_ndcg@10"
    assert proof_metric("val_ndcg@10", {"val_ndcg@10": 0.7}) == "val_ndcg@10"
