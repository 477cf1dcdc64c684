"""The best-weights keeper's verdict on one run: which weights it kept, and the test that decided.

:class:`finetuning.callbacks.KeepBestWeights` makes it (:meth:`~finetuning.callbacks.KeepBestWeights.verdict`);
a tracker records it on the run (MLflow tag ``clicktune.keeper``) and on the model version the run
becomes, and the fine-tuning job reads it back: when the keeper kept the start, the registered
"candidate" holds the start weights, so the quality gate has nothing to compare and the task's
reason is the keeper's test of the best trained checkpoint instead.

Example::

    >>> from finetuning.metrics.paired import PairedDifference
    >>> verdict = KeeperVerdict("start kept", "val_rand_ndcg@10", 1.645, 10, candidate_step=40,
    ...                         proof=PairedDifference(15, 0.004, 0.003))
    >>> verdict.reason()
    "the best trained checkpoint (step 40) by val_rand_ndcg@10: +0.0040 ± 0.0030 (paired SE over 15 held-out queries) = 1.3 SE ≤ 1.76 (Student's t, 14 df, at keep_candidate_z 1.645) → within the noise: the start weights were kept"
    >>> KeeperVerdict.from_json(verdict.to_json()) == verdict
    True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from finetuning.metrics.paired import PairedDifference

CANDIDATE_KEPT = "candidate beats start"
START_KEPT = "start kept"


@dataclass(frozen=True)
class KeeperVerdict:
    """``decision`` (:data:`CANDIDATE_KEPT` or :data:`START_KEPT`) on ``metric`` (the proof figure) at
    the keeper's level ``prove_z`` and ``min_queries``; ``candidate_step``: the optimizer step of the
    best trained checkpoint (None: none was validated); ``proof``: its paired test against the start
    (None when the validations recorded no per-query values and the means decided)."""

    decision: str
    metric: str
    prove_z: float
    min_queries: int
    candidate_step: int | None = None
    proof: PairedDifference | None = None

    @property
    def start_kept(self) -> bool:
        return self.decision == START_KEPT

    def reason(self) -> str:
        """Why these weights, in one sentence (the figures of the test, the bar, the decision)."""
        if self.candidate_step is None:
            return "no trained checkpoint was validated: the start weights were kept"
        head = f"the best trained checkpoint (step {self.candidate_step}) by {self.metric}"
        kept = "the start weights were kept" if self.start_kept else "its weights were kept"
        test = self.proof
        if test is None:
            verb = "did not beat" if self.start_kept else "beat"
            return f"{head} {verb} the start (no per-query values: decided on the means): {kept}"
        bar = test.describe_bar(self.prove_z, "keep_candidate_z")
        if not self.start_kept:
            return f"{head}: {test.describe()} > {bar} → {kept}"
        if test.mean <= 0:
            return f"{head}: {test.describe()} → does not beat the start: {kept}"
        if test.n < self.min_queries:
            return (f"{head}: {test.describe()}, a gain on only {test.n} held-out queries, fewer than "
                    f"keep_min_queries {self.min_queries}: {kept}")
        return f"{head}: {test.describe()} ≤ {bar} → within the noise: {kept}"

    def to_json(self) -> str:
        """Compact JSON (a tag value); non-finite figures become null."""
        proof = None if self.proof is None else {
            "n": self.proof.n, "mean": _finite(self.proof.mean), "standard_error": _finite(self.proof.standard_error),
            **({"bar_z": self.proof.bar_z, "witnesses": self.proof.witnesses} if self.proof.bar_z is not None else {})}
        return json.dumps({"decision": self.decision, "metric": self.metric, "prove_z": self.prove_z,
                           "min_queries": self.min_queries, "candidate_step": self.candidate_step, "proof": proof},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "KeeperVerdict | None":
        """The verdict a tag holds; None when the tag is absent or unreadable (a run recorded before
        verdicts were, or a hand-edited tag)."""
        if not text:
            return None
        try:
            raw: dict[str, Any] = json.loads(text)
            proof = raw.get("proof")
            return cls(
                decision=str(raw["decision"]), metric=str(raw["metric"]), prove_z=float(raw["prove_z"]),
                min_queries=int(raw["min_queries"]),
                candidate_step=None if raw.get("candidate_step") is None else int(raw["candidate_step"]),
                proof=None if proof is None else PairedDifference(
                    int(proof["n"]), _number(proof.get("mean")), _number(proof.get("standard_error")),
                    bar_z=None if proof.get("bar_z") is None else float(proof["bar_z"]),
                    witnesses=int(proof.get("witnesses", 1))),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
