"""The quality gate: a candidate is deployed only if it beats the start model on held-out sessions.

Both numbers come from the same evaluation: the main metric (``val_ndcg@10`` by default) of the
start model and of the best run's model, on the held-out sessions of this task's batch (queries
never seen in training). ``min_improvement`` (≥ 0) asks for a margin: with higher-is-better the
candidate must reach ``before + min_improvement`` *and* be strictly better than ``before``.

``fine_tune`` keeps the best weights seen and counts the untouched model, so a run that learned
nothing returns the start weights with ``after == before`` — the gate then says so instead of
deploying an identical model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    before: float | None
    after: float | None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def quality_gate(metric: str, before: float | None, after: float | None, *, higher_is_better: bool = True,
                 min_improvement: float = 0.0) -> GateDecision:
    """Decide whether ``after`` (candidate) beats ``before`` (start model) on ``metric``."""
    if after is None or math.isnan(after):
        return GateDecision(False, f"the candidate has no held-out {metric}", before, after)
    if before is None or math.isnan(before):
        return GateDecision(False, f"the start model's held-out {metric} is unknown: cannot compare", before, after)
    gain = (after - before) if higher_is_better else (before - after)
    if gain <= 0:
        return GateDecision(False, f"candidate {metric} {_fmt(after)} does not beat the start model's "
                            f"{_fmt(before)} on held-out sessions", before, after)
    if gain < min_improvement:
        return GateDecision(False, f"candidate {metric} {_fmt(after)} beats {_fmt(before)} by {gain:.4f}, "
                            f"less than min_improvement {min_improvement:g}", before, after)
    return GateDecision(True, f"candidate {metric} {_fmt(after)} beats the start model's {_fmt(before)} "
                        f"(+{gain:.4f}) on held-out sessions", before, after)
