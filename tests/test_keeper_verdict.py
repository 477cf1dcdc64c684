"""The keeper's verdict: what the best-weights keeper decided and why, as the quality gate and the
task read it back (a pure record; the keeper itself is tested in test_engine_fine_tuner.py)."""

from __future__ import annotations

import math

import pytest

from finetuning.keeper_verdict import CANDIDATE_KEPT, START_KEPT, KeeperVerdict
from finetuning.metrics.paired import PairedDifference
from worker.jobs.fine_tuning.quality_gate import start_kept


def verdict(decision: str = START_KEPT, proof: PairedDifference | None = PairedDifference(15, 0.004, 0.003),
            step: int | None = 40) -> KeeperVerdict:
    return KeeperVerdict(decision, "val_rand_ndcg@10", 1.645, 10, candidate_step=step, proof=proof)


def test_the_reason_names_the_checkpoint_its_figures_the_bar_and_the_decision():
    within = verdict().reason()
    assert within.startswith("the best trained checkpoint (step 40) by val_rand_ndcg@10: ")
    assert "+0.0040 ± 0.0030 (paired SE over 15 held-out queries) = 1.3 SE" in within
    assert "≤ 1.76 (Student's t, 14 df, at keep_candidate_z 1.645) → within the noise" in within
    assert within.endswith("the start weights were kept")

    worse = verdict(proof=PairedDifference(15, -0.002, 0.003)).reason()
    assert "-0.0020 ± 0.0030" in worse and "does not beat the start" in worse and "Student's t" not in worse

    few = verdict(proof=PairedDifference(6, 0.05, 0.01)).reason()
    assert "+0.0500 ± 0.0100 (paired SE over 6 held-out queries) = 5.0 SE, a gain on only 6 held-out queries, " \
           "fewer than keep_min_queries 10: the start weights were kept" in few
    assert "does not beat" in verdict(proof=PairedDifference(6, 0.0, 0.0)).reason()

    proven = verdict(CANDIDATE_KEPT, PairedDifference(30, 0.02, 0.005)).reason()
    assert "= 4.0 SE > 1.70 (Student's t, 29 df" in proven and proven.endswith("its weights were kept")

    assert "decided on the means" in verdict(proof=None).reason()
    assert verdict(step=None).reason() == "no trained checkpoint was validated: the start weights were kept"


def test_a_verdict_survives_its_tag_and_an_unreadable_tag_reads_as_none():
    witnessed = verdict(proof=PairedDifference(48, 0.019, 0.0136, bar_z=1.93, witnesses=2))
    assert "1.4 SE ≤ 1.93 (the largest t of 2 held-out judges under random signs, at keep_candidate_z 1.645)" in witnessed.reason()
    for original in (verdict(), verdict(CANDIDATE_KEPT, PairedDifference(12, 0.01, 0.0)), verdict(proof=None, step=None), witnessed):
        assert KeeperVerdict.from_json(original.to_json()) == original
    # a proof on one query has no standard error: stored as null, read back as NaN
    single = KeeperVerdict.from_json(verdict(proof=PairedDifference(1, 0.1, math.nan)).to_json())
    assert single.proof.n == 1 and math.isnan(single.proof.standard_error)
    for text in (None, "", "not json", '{"decision": "start kept"}', "[1, 2]"):
        assert KeeperVerdict.from_json(text) is None


def test_the_gate_refuses_a_kept_start_with_the_keepers_test():
    decision = start_kept(verdict(), 0.71, gate_z=1.645, min_gate_queries=10)
    assert decision.passed is False and decision.rule == "keeper" and decision.metric == "val_rand_ndcg@10"
    assert decision.reason == f"nothing to deploy, the candidate holds the start weights: {verdict().reason()}"
    # the figures are the best trained checkpoint's against the start; the registered weights are the start's
    assert (decision.n_queries, decision.mean_difference, decision.standard_error) == (15, 0.004, 0.003)
    assert decision.z == pytest.approx(4 / 3) and decision.before == decision.after == 0.71
    bare = start_kept(verdict(proof=None, step=None), None)
    assert bare.passed is False and bare.n_queries is None and bare.z is None
