"""The quality gate: a candidate is deployed only if it beats the start model on held-out sessions
by more than their noise.

The figures come from one evaluation: the main metric (``val_ndcg@10`` by default) of the start
model and of the best run's kept weights, per held-out query (queries never seen in training, in the
same order for both, so they pair up). With ``d_i`` = candidate − start on query ``i`` (signed so
that > 0 is better), ``n`` queries, mean ``m`` and standard error ``se = sd(d) / sqrt(n)``, the
gate passes when all of these hold:

- ``n >= min_gate_queries`` (default 10): the standard error is estimated from the spread of the
  differences themselves; below about ten queries that estimate is itself too unstable (and a
  per-query nDCG takes few distinct values) for a deploy decision to rest on it;
- ``m > t * se`` and ``m > 0``, ``t`` Student's t quantile with ``n − 1`` degrees of freedom at
  the one-sided level ``gate_z`` names (default 1.645: 95 %; t is 1.83 at 10 queries, 1.76 at 15,
  1.66 at 100; :mod:`finetuning.metrics.paired`, the test the best-weights keeper applies too).
  The held-out figure is a weak judge — click labels, a few dozen queries — and at one standard
  error (α ≈ 16 %) it let through more harm than gain: of the five candidates the quality suite
  and the demo saw pass with 1 ≤ z < 1.645, three scored below the start on the test queries
  (−0.0050, −0.0020, −0.0068 nDCG@10; the others +0.0012 and +0.0019) (docs/engine.md). With the
  normal quantile the gate deployed a candidate at z 1.7 on 15 queries that lost −0.0076 on test;
  the standard error of 15 differences is itself an estimate, and Student's t (1.76) allows for
  it. A wrong deploy serves every user a worse model until the next iteration; a refused gain
  waits for more clicks. With ``k`` of ``n`` queries moved by the same amount and the rest tied,
  z = √(k(n−1)/(n−k)): one or two moved queries never deploy at the default (the comparison
  allows for rounding, so a z that equals the bar is not a pass); ``gate_z=0`` is "strictly
  better on average";
- ``m >= min_improvement``: an absolute margin on top.

The judge is :func:`gate_metric`: the task's ``gate_metric`` when given, else
:func:`~finetuning.metrics.held_out.proof_metric`, the figure the keeper's burden of proof uses
too. When the held-out sessions include exploration sessions (results shown in a random order)
for at least 10 queries, two witnesses may each prove the candidate (:func:`gate_witnesses`,
:func:`witness_gate`): the exploration sessions' figure (``val_rand_ndcg@10``, the one that chose
the kept weights and the only one whose labels do not carry the start model's order) and both
held-out judges as one (``val_both_ndcg@10``: per held-out query the mean of that figure and the
own-results figure below where the query has both, else the one it has,
:func:`~finetuning.metrics.held_out.combine_judges`). The stronger decides, against a bar set for
the two: the level-``gate_z`` quantile of the larger t when every query's differences get a random
sign (:func:`~finetuning.metrics.paired.strongest_witness`). Alone, the exploration judge (the
queries clicked in an explored session) refused a checkpoint that gained +0.034 on SciFact's test
queries, and both as one refused one that gained +0.0074 (docs/engine.md, "Two witnesses, one
level"). Otherwise it is the main metric's own-results twin (``val_own_ndcg@10``),
each held-out query ranked against the results its own sessions showed: the main metric ranks
every held-out query against the pool of all of them — the start model's own top results, so a
trained model that lifts another query's result only loses by it. On 500-query logs the
own-results judge passed two candidates that gained on the test queries (+0.041, +0.009
nDCG@10) which the shared pool refused, and neither judge passed any candidate that lost
(docs/engine.md, "The gate's judge").

When the best run's keeper kept the start weights (:class:`~finetuning.keeper_verdict.KeeperVerdict`),
the registered candidate *is* the start model: there is nothing to compare, and
:func:`start_kept` refuses with the keeper's own test of the best trained checkpoint as the reason
(rule ``"keeper"``; the figures are that checkpoint's against the start, on the keeper's metric).

Without per-query values (a run recorded before they were, or lists that do not pair up) the gate
falls back to comparing the two means (strictly better, plus ``min_improvement``) and says so in
its reason. ``fine_tune`` keeps the best weights seen and counts the untouched model, so a run
that learned nothing returns the start weights with ``after == before`` — the gate then says so
instead of deploying an identical model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from dao.task_documents import FineTuningOptions
from finetuning.metrics.held_out import proof_metric, proof_witnesses
from finetuning.keeper_verdict import KeeperVerdict
from finetuning.metrics.paired import PairedDifference, paired_difference, strongest_witness

#: The defaults of the task options of the same names.
MIN_GATE_QUERIES: int = FineTuningOptions.model_fields["min_gate_queries"].default
GATE_Z: float = FineTuningOptions.model_fields["gate_z"].default

@dataclass(frozen=True)
class GateDecision:
    """The decision and its figures. ``rule``: ``"paired"`` (per-query test) or ``"means"`` (fallback).
    ``mean_difference`` / ``standard_error`` / ``z`` are signed so that > 0 favours the candidate; ``z`` is
    None when infinite (the same gain on every query: a standard error of 0)."""

    passed: bool
    reason: str
    before: float | None
    after: float | None
    metric: str = ""
    rule: str = "means"
    n_queries: int | None = None
    mean_difference: float | None = None
    standard_error: float | None = None
    z: float | None = None
    gate_z: float = GATE_Z
    min_gate_queries: int = MIN_GATE_QUERIES
    min_improvement: float = 0.0


def gate_witnesses(chosen: str | None, main_metric: str, recorded: Mapping[str, float]) -> tuple[str, ...]:
    """The held-out figures the gate may judge by: ``chosen`` alone when given, else
    :func:`~finetuning.metrics.held_out.proof_witnesses` (the keeper's)."""
    return (chosen,) if chosen else proof_witnesses(main_metric, recorded)


def gate_metric(chosen: str | None, main_metric: str, recorded: Mapping[str, float]) -> str:
    """The held-out metric the gate judges by: ``chosen`` (the task's ``gate_metric``) when given,
    else :func:`~finetuning.metrics.held_out.proof_metric` (the exploration twin, else the
    own-results twin, else the main metric)."""
    return chosen or proof_metric(main_metric, recorded)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def quality_gate(metric: str, before: float | None, after: float | None, *, higher_is_better: bool = True,
                 min_improvement: float = 0.0, per_query_before: Sequence[float] | None = None,
                 per_query_after: Sequence[float] | None = None, min_gate_queries: int = MIN_GATE_QUERIES,
                 gate_z: float = GATE_Z, test: PairedDifference | None = None) -> GateDecision:
    """Decide whether the candidate (``after``) beats the start model (``before``) on ``metric``
    (``test``: the paired test of the per-query values when already made, e.g. with a bar set for
    several witnesses by :func:`witness_gate`)."""
    base = dict(before=before, after=after, metric=metric, gate_z=gate_z, min_gate_queries=min_gate_queries,
                min_improvement=min_improvement)
    if _missing(after):
        return GateDecision(False, f"the candidate has no held-out {metric}", **base)
    if _missing(before):
        return GateDecision(False, f"the start model's held-out {metric} is unknown: cannot compare", **base)
    pairs = (per_query_before is not None and per_query_after is not None and len(per_query_before) > 0
             and len(per_query_before) == len(per_query_after))
    if not pairs:
        return _means_rule(metric, before, after, higher_is_better, min_improvement, base)
    test = test or paired_difference(per_query_before, per_query_after, higher_is_better)
    n, mean, se, z = test.n, test.mean, test.standard_error, test.z
    figures = dict(rule="paired", n_queries=n, mean_difference=mean, standard_error=None if math.isnan(se) else se,
                   z=z if math.isfinite(z) else None)
    head = f"candidate {metric} {_fmt(after)} vs start {_fmt(before)}"
    if n < max(2, min_gate_queries):
        return GateDecision(False, f"{head} on only {n} held-out queries, fewer than min_gate_queries "
                            f"{min_gate_queries}: too few to tell a gain from noise", **base, **figures)
    measured = test.describe()
    if mean <= 0:
        return GateDecision(False, f"{head}: {measured} → does not beat the start", **base, **figures)
    bar = test.describe_bar(gate_z, "gate_z")
    if not test.beyond(gate_z):
        return GateDecision(False, f"{head}: {measured} ≤ {bar} → within the noise of the start",
                            **base, **figures)
    if mean < min_improvement:
        return GateDecision(False, f"{head}: {measured} > {bar}, but the gain is less than min_improvement "
                            f"{min_improvement:g}", **base, **figures)
    return GateDecision(True, f"{head}: {measured} > {bar} → deploy", **base, **figures)


def witness_gate(witnesses: Sequence[str], before: Mapping[str, float], after: Mapping[str, float],
                 per_query: Mapping[str, tuple[Sequence[float], Sequence[float]] | None], *,
                 higher_is_better: bool = True, min_improvement: float = 0.0,
                 min_gate_queries: int = MIN_GATE_QUERIES, gate_z: float = GATE_Z) -> GateDecision:
    """The gate on the strongest of several held-out figures (:func:`gate_witnesses`), its bar set for
    all of them (:func:`~finetuning.metrics.paired.strongest_witness`); with one figure, or without
    per-query values for every one, :func:`quality_gate` on the first."""
    limits = dict(higher_is_better=higher_is_better, min_improvement=min_improvement,
                  min_gate_queries=min_gate_queries, gate_z=gate_z)
    pairs = [per_query.get(metric) for metric in witnesses]
    if len(witnesses) > 1 and all(pair and pair[0] and len(pair[0]) == len(pair[1]) for pair in pairs):
        strongest, test = strongest_witness(pairs, gate_z, higher_is_better)
        metric = witnesses[strongest]
        return quality_gate(metric, before.get(metric), after.get(metric), per_query_before=pairs[strongest][0],
                            per_query_after=pairs[strongest][1], test=test, **limits)
    metric, pair = witnesses[0], pairs[0] or (None, None)
    return quality_gate(metric, before.get(metric), after.get(metric), per_query_before=pair[0],
                        per_query_after=pair[1], **limits)


def start_kept(keeper: KeeperVerdict, before: float | None, *, min_gate_queries: int = MIN_GATE_QUERIES,
               gate_z: float = GATE_Z, min_improvement: float = 0.0) -> GateDecision:
    """Not passed: the best run kept the start weights, so the candidate is the start model; the
    reason and figures are the keeper's test of the best trained checkpoint."""
    test = keeper.proof
    figures = {} if test is None else dict(
        n_queries=test.n, mean_difference=test.mean,
        standard_error=None if math.isnan(test.standard_error) else test.standard_error,
        z=test.z if math.isfinite(test.z) else None)
    return GateDecision(False, f"nothing to deploy, the candidate holds the start weights: {keeper.reason()}",
                        before=before, after=before, metric=keeper.metric, rule="keeper", gate_z=gate_z,
                        min_gate_queries=min_gate_queries, min_improvement=min_improvement, **figures)


def _means_rule(metric: str, before: float, after: float, higher_is_better: bool, min_improvement: float,
                base: dict) -> GateDecision:
    """The fallback without per-query values: the means alone (strictly better, plus the margin)."""
    note = "no per-query held-out values recorded: decided on the means alone; "
    gain = (after - before) if higher_is_better else (before - after)
    figures = dict(rule="means", mean_difference=gain)
    if gain <= 0:
        return GateDecision(False, f"{note}candidate {metric} {_fmt(after)} does not beat the start model's "
                            f"{_fmt(before)} on held-out sessions", **base, **figures)
    if gain < min_improvement:
        return GateDecision(False, f"{note}candidate {metric} {_fmt(after)} beats {_fmt(before)} by {gain:.4f}, "
                            f"less than min_improvement {min_improvement:g}", **base, **figures)
    return GateDecision(True, f"{note}candidate {metric} {_fmt(after)} beats the start model's {_fmt(before)} "
                        f"(+{gain:.4f}) on held-out sessions", **base, **figures)
