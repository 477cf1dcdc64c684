"""The quality gate as a pure function: paired per held-out query, noise-aware, with a fallback on the
means when a run recorded no per-query values."""

from __future__ import annotations

import json
import math
import random

import pytest

from dao.task_documents import FineTuningOptions, QualityGateResult
from finetuning.experiments.records import per_query_from_payload, per_query_payload
from finetuning.metrics.paired import critical_value, paired_difference, strongest_witness
from finetuning.params import FineTuningSettings
from worker.jobs.fine_tuning.quality_gate import GATE_Z, MIN_GATE_QUERIES, gate_metric, gate_witnesses, quality_gate, witness_gate


def per_query(n: int, mean: float, spread: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [min(1.0, max(0.0, mean + rng.uniform(-spread, spread))) for _ in range(n)]


def gate(before: list[float], after: list[float], **kwargs):
    return quality_gate("val_ndcg@10", sum(before) / len(before), sum(after) / len(after),
                        per_query_before=before, per_query_after=after, **kwargs)


def paired_figures(before, after, higher_is_better=True):
    test = paired_difference(before, after, higher_is_better)
    return test.n, test.mean, test.standard_error


def test_defaults_are_the_task_options_and_the_keepers_burden_of_proof():
    options = FineTuningOptions()
    assert (MIN_GATE_QUERIES, GATE_Z) == (options.min_gate_queries, options.gate_z) == (10, 1.645)
    # what the keeper keeps by default is what the gate would deploy by default
    settings = FineTuningSettings()
    assert (settings.keep_min_queries, settings.keep_candidate_z) == (MIN_GATE_QUERIES, GATE_Z)
    with pytest.raises(ValueError):
        FineTuningOptions(min_gate_queries=1)
    with pytest.raises(ValueError):
        FineTuningOptions(gate_z=-0.5)


def test_paired_figures_are_mean_and_standard_error_of_the_differences():
    n, mean, se = paired_figures([0.5, 0.6, 0.7, 0.8], [0.6, 0.6, 0.9, 0.9])
    diffs = [0.1, 0.0, 0.2, 0.1]
    sd = math.sqrt(sum((d - 0.1) ** 2 for d in diffs) / 3)
    assert n == 4 and mean == pytest.approx(0.1) and se == pytest.approx(sd / 2)
    # lower is better: the sign turns, so > 0 still favours the candidate
    assert paired_figures([0.5, 0.6], [0.4, 0.4], higher_is_better=False)[1] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="do not pair up"):
        paired_difference([0.5, 0.6], [0.5])


def test_the_bar_is_students_t_at_the_level_gate_z_names():
    assert critical_value(1.645, 10) == pytest.approx(1.833, abs=1e-3)    # 9 df
    assert critical_value(1.645, 15) == pytest.approx(1.761, abs=1e-3)
    assert critical_value(1.645, 1000) == pytest.approx(1.646, abs=1e-3)  # the normal quantile in the limit
    assert critical_value(0.0, 12) == 0.0 and critical_value(-1.0, 12) < 0
    # z 1.7 on 15 queries passed the normal bar and is refused by Student's t (14 df: 1.761)
    before = [0.5] * 15
    after = [b + d for b, d in zip(before, [0.1] * 10 + [-0.1] * 4 + [0.0])]  # z 1.70
    decision = gate(before, after)
    assert 1.645 < decision.z < 1.761 and not decision.passed
    assert "≤ 1.76 (Student's t, 14 df, at gate_z 1.645) → within the noise" in decision.reason


def test_clearly_better_passes_with_its_figures():
    before = per_query(37, 0.70, 0.2)
    after = [min(1.0, v + 0.05 + 0.01 * (i % 3)) for i, v in enumerate(before)]
    decision = gate(before, after)
    assert decision.passed is True and decision.rule == "paired" and decision.n_queries == 37
    n, mean, se = paired_figures(before, after)
    assert decision.mean_difference == pytest.approx(mean) and decision.standard_error == pytest.approx(se)
    assert decision.z == pytest.approx(mean / se) and decision.z >= GATE_Z
    assert decision.mean_difference == pytest.approx(decision.after - decision.before)
    assert f"{mean:+.4f} ± {se:.4f} (paired SE over 37 held-out queries)" in decision.reason
    assert decision.reason.endswith("> 1.69 (Student's t, 36 df, at gate_z 1.645) → deploy")
    assert f"candidate val_ndcg@10 {decision.after:.4f} vs start {decision.before:.4f}" in decision.reason
    # the figures fit the task document's model as they are
    assert QualityGateResult(**vars(decision)).n_queries == 37


def test_better_by_less_than_z_standard_errors_is_refused_with_the_figures():
    before = per_query(40, 0.6, 0.3, seed=1)
    after = [b + (0.05 if i % 2 else -0.04) for i, b in enumerate(before)]  # +0.005 on average, ±0.045
    n, mean, se = paired_figures(before, after)
    assert 0 < mean < se, (mean, se)
    decision = gate(before, after)
    assert decision.passed is False and decision.n_queries == 40
    assert "within the noise of the start" in decision.reason and f"± {se:.4f}" in decision.reason
    assert f"= {mean / se:.1f} SE ≤ 1" in decision.reason
    # z = 0 is today's "strictly better on average"
    assert gate(before, after, gate_z=0.0).passed is True
    # and a higher bar refuses what z = 1 lets through
    clear = [b + 0.02 + 0.01 * (i % 2) for i, b in enumerate(before)]
    z = gate(before, clear).z
    assert gate(before, clear).passed is True and gate(before, clear, gate_z=z + 0.1).passed is False


def test_one_or_two_queries_that_moved_are_not_enough_and_three_are():
    # the demo's first larger run: 31 held-out queries, one of them +0.0198, the rest tied -> z = 1.0 exactly
    before = per_query(31, 0.95, 0.04)

    def moved(*queries, **kwargs):
        return gate(before, [b + (0.0198 if i in queries else 0.0) for i, b in enumerate(before)], **kwargs)

    one = moved(7)
    assert one.z == pytest.approx(1.0) and not one.passed and "within the noise" in one.reason
    assert not moved(7, gate_z=1.0).passed  # z equals gate_z: a rounding difference does not deploy
    two, three = moved(7, 12), moved(7, 12, 20)
    assert two.z == pytest.approx(math.sqrt(2 * 30 / 29)) and not two.passed
    assert moved(7, 12, gate_z=1.0).passed
    assert three.z == pytest.approx(math.sqrt(3 * 30 / 28)) and three.passed


def test_worse_or_identical_is_refused():
    before = per_query(20, 0.5, 0.2)
    assert "does not beat the start" in gate(before, list(before)).reason
    worse = [b - 0.1 for b in before]
    decision = gate(before, worse)
    assert decision.passed is False and decision.mean_difference == pytest.approx(-0.1)


def test_too_few_queries_is_refused_even_when_clearly_better():
    before = per_query(6, 0.5, 0.1)
    after = [b + 0.3 for b in before]
    decision = gate(before, after)
    assert decision.passed is False and decision.n_queries == 6
    assert "only 6 held-out queries, fewer than min_gate_queries 10" in decision.reason
    assert gate(before, after, min_gate_queries=5).passed is True


def test_min_improvement_is_a_margin_on_top():
    before = per_query(30, 0.5, 0.1)
    after = [b + 0.02 for b in before]
    assert gate(before, after).passed is True  # about the same gain everywhere: a tiny SE
    exact = gate([0.5] * 12, [0.75] * 12)      # exactly the same gain: SE 0, z infinite (not stored)
    assert exact.passed is True and exact.standard_error == 0 and exact.z is None
    decision = gate(before, after, min_improvement=0.05)
    assert decision.passed is False and "less than min_improvement 0.05" in decision.reason


def test_lower_is_better():
    before = per_query(25, 2.0, 0.5)
    after = [b - 0.3 + 0.05 * (i % 3) for i, b in enumerate(before)]
    decision = gate(before, after, higher_is_better=False)
    assert decision.passed is True and decision.mean_difference > 0
    assert gate(before, after, higher_is_better=True).passed is False


@pytest.mark.parametrize("before_values, after_values", [(None, None), ([0.5, 0.6], None), ([0.5, 0.6], [0.7]), ([], [])])
def test_missing_or_unpaired_per_query_values_fall_back_to_the_means(before_values, after_values):
    decision = quality_gate("val_x", 0.50, 0.55, per_query_before=before_values, per_query_after=after_values)
    assert decision.passed is True and decision.rule == "means" and decision.n_queries is None
    assert decision.reason.startswith("no per-query held-out values recorded: decided on the means alone")
    assert decision.mean_difference == pytest.approx(0.05)
    refused = quality_gate("val_x", 0.50, 0.50, per_query_before=before_values, per_query_after=after_values)
    assert refused.passed is False and "does not beat" in refused.reason


def test_unknown_means_are_refused():
    assert quality_gate("val_x", float("nan"), 0.6).passed is False
    assert "no held-out val_x" in quality_gate("val_x", 0.5, None, per_query_before=[0.5] * 12,
                                               per_query_after=[0.6] * 12).reason


def test_per_query_values_travel_as_a_run_artifact_document():
    document = per_query_payload({"val_ndcg@10": ([0.5, 0.25], [0.75, 0.5]), "val_own_ndcg@10": ([1.0, 0.5], [1.0, 1.0])})
    payload = json.loads(json.dumps(document))
    assert per_query_from_payload(payload, "val_ndcg@10") == ([0.5, 0.25], [0.75, 0.5])
    assert per_query_from_payload(payload, "val_own_ndcg@10") == ([1.0, 0.5], [1.0, 1.0])
    assert per_query_from_payload(payload, "val_mrr@10") is None                 # not recorded
    unpaired = {"metrics": {"val_x": {"before": [0.5, 0.25], "after": [0.1]}}}
    assert per_query_from_payload(unpaired, "val_x") is None
    assert per_query_from_payload({"metrics": {"val_x": {"before": [0.5], "after": ["x"]}}}, "val_x") is None
    assert per_query_from_payload(None, "val_ndcg@10") is None


def test_the_gate_judges_by_the_own_results_twin_of_the_main_metric_when_it_was_validated():
    recorded = {"val_ndcg@10": 0.8, "val_own_ndcg@10": 0.9, "val_mrr@10": 0.7}
    assert gate_metric(None, "val_ndcg@10", recorded) == "val_own_ndcg@10"
    assert gate_metric(None, "val_mrr@10", recorded) == "val_mrr@10"               # no own twin validated
    assert gate_metric(None, "val_ndcg@10", {"val_ndcg@10": 0.8}) == "val_ndcg@10"
    assert gate_metric("val_ndcg@10", "val_ndcg@10", recorded) == "val_ndcg@10"    # the task's choice
    assert FineTuningOptions().gate_metric is None
    # exploration sessions judged enough queries: their figure judges, as it chose the weights
    explored = {**recorded, "val_rand_ndcg@10": 0.75}
    assert gate_metric(None, "val_ndcg@10", explored) == "val_rand_ndcg@10"
    assert gate_metric(None, "val_rand_ndcg@10", explored) == "val_rand_ndcg@10"  # the keeper's judge as the main metric
    assert gate_metric("val_own_ndcg@10", "val_ndcg@10", explored) == "val_own_ndcg@10"


def test_two_witnesses_either_may_prove_at_a_bar_set_for_both():
    explored = {"val_ndcg@10": 0.8, "val_own_ndcg@10": 0.9, "val_rand_ndcg@10": 0.75, "val_both_ndcg@10": 0.8}
    assert gate_witnesses(None, "val_ndcg@10", explored) == ("val_rand_ndcg@10", "val_both_ndcg@10")
    assert gate_witnesses("val_own_ndcg@10", "val_ndcg@10", explored) == ("val_own_ndcg@10",)  # the task's choice
    rng = random.Random(4)
    # 60 queries judged by both as one, the first 25 of them by the exploration sessions too
    both_before = [rng.uniform(0.3, 0.9) for _ in range(60)]
    both_after = [b + 0.02 + rng.gauss(0, 0.04) for b in both_before]   # a gain both as one sees
    rand_before = [rng.uniform(0.3, 0.9) for _ in range(25)]
    rand_after = [b + rng.gauss(0, 0.08) for b in rand_before]          # the exploration sessions alone: noise
    strongest, test = strongest_witness([(rand_before, rand_after), (both_before, both_after)], GATE_Z)
    alone = paired_difference(both_before, both_after)
    assert strongest == 1 and (test.n, test.mean) == (alone.n, alone.mean) and test.witnesses == 2
    # the bar allows for two chances: above one judge's Student's t, below Bonferroni's at half the level
    assert critical_value(GATE_Z, 60) < test.bar_z < critical_value(1.96, 25) + 0.3
    assert strongest_witness([(rand_before, rand_after), (both_before, both_after)], GATE_Z) == (strongest, test)  # fixed seed
    per_query = {"val_rand_ndcg@10": (rand_before, rand_after), "val_both_ndcg@10": (both_before, both_after)}
    before = {m: sum(v[0]) / len(v[0]) for m, v in per_query.items()}
    after = {m: sum(v[1]) / len(v[1]) for m, v in per_query.items()}
    decision = witness_gate(("val_rand_ndcg@10", "val_both_ndcg@10"), before, after, per_query)
    assert decision.passed and decision.metric == "val_both_ndcg@10" and decision.rule == "paired"
    assert "largest t of 2 held-out judges under random signs" in decision.reason
    # without per-query values for every witness: the first alone
    single = witness_gate(("val_rand_ndcg@10", "val_both_ndcg@10"), before, after, {"val_rand_ndcg@10": per_query["val_rand_ndcg@10"]})
    assert single.metric == "val_rand_ndcg@10" and not single.passed


def test_noise_rarely_passes_either_of_two_witnesses():
    rng = random.Random(9)
    passed = 0
    for _ in range(150):
        both = [rng.gauss(0, 0.05) for _ in range(50)]
        rand = [rng.gauss(0, 0.05) for _ in range(20)]
        _, test = strongest_witness([([0.0] * 20, rand), ([0.0] * 50, both)], GATE_Z, draws=500)
        passed += test.beyond(GATE_Z)
    assert passed / 150 <= 0.10  # the one level, 5 %, for the pair (150 trials of noise)
