"""Is a candidate better than the start beyond the noise of the held-out queries? One paired test,
shared by the best-weights keeper (:class:`finetuning.callbacks.KeepBestWeights`) and the quality
gate (``worker/jobs/fine_tuning/quality_gate.py``).

Both models are scored on the same held-out queries. With ``d_i`` = candidate − start on query
``i`` (signed so that > 0 is better), ``n`` queries, mean ``m`` and standard error
``se = sd(d) / sqrt(n)``, the candidate is better beyond the noise at level ``z`` when
``m > t * se``, where ``t`` is Student's t quantile with ``n − 1`` degrees of freedom at the
one-sided level that ``z`` names for a normal law (``z`` 1.645: 95 %). The standard error is
itself estimated from the ``n`` differences, so on the 10–20 queries a small log holds out the
normal quantile understates the bar (at 95 %: t is 1.83 at 10 queries, 1.76 at 15, 1.73 at 20,
1.66 at 100); Student's t is the textbook remedy (paired t-test). ``z`` ≤ 0 turns the test around:
``m > t * se`` with ``t`` ≤ 0 accepts a candidate that is not worse beyond ``|t|`` standard errors.

Two witnesses, one level. With several held-out judges of the same candidate (the exploration
sessions alone, and both judges as one: :func:`finetuning.metrics.held_out.combine_judges`),
:func:`strongest_witness` takes the judge with the largest t and sets its bar from the maximum of
the judges' t when every query's differences get a random sign (a max-T permutation test,
Westfall & Young 1993, *Resampling-Based Multiple Testing*): either witness can prove the
candidate, and the chance that noise passes either stays at the one level, their correlation
allowed for. The bar is drawn from the run's own differences at a fixed seed (deterministic).

Example::

    >>> test = paired_difference(before=[0.5, 0.4, 0.6, 0.7], after=[0.6, 0.5, 0.6, 0.8])
    >>> round(test.mean, 3), test.n
    (0.075, 4)
    >>> test.beyond(1.645)   # t at 3 degrees of freedom is 2.35: 0.075 > 2.35 * 0.025
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

#: A margin equal to the bar is not a pass, up to rounding: one query that moved and all others
#: tied give z = 1 exactly (mean = se = d / n), and a last-digit difference must not decide.
TOLERANCE: float = 1e-9


def critical_value(z: float, n: int) -> float:
    """Student's t quantile with ``n − 1`` degrees of freedom at the one-sided level Φ(``z``)."""
    if n < 2:
        return math.inf if z > 0 else -math.inf if z < 0 else 0.0
    return float(stats.t.ppf(stats.norm.cdf(z), df=n - 1))


@dataclass(frozen=True)
class PairedDifference:
    """``n`` paired queries, the ``mean`` difference and its ``standard_error`` (NaN below 2 queries)."""

    n: int
    mean: float
    standard_error: float
    #: the bar in standard errors when a permutation set it (:func:`strongest_witness`), else None: Student's t
    bar_z: float | None = None
    #: how many judges the strongest was taken from (the bar allows for all of them)
    witnesses: int = 1

    @property
    def z(self) -> float:
        """``mean / standard_error`` (±inf when every query moved by the same amount, 0 when none moved)."""
        if self.standard_error > 0:
            return self.mean / self.standard_error
        return math.inf if self.mean > 0 else -math.inf if self.mean < 0 else 0.0

    def bar(self, z: float) -> float:
        """The mean difference a candidate must exceed at level ``z`` (see the module docstring)."""
        return self._bar_z(z) * self.standard_error

    def _bar_z(self, z: float) -> float:
        return self.bar_z if self.bar_z is not None else critical_value(z, self.n)

    def describe(self) -> str:
        """``+0.0040 ± 0.0030 (paired SE over 15 held-out queries) = 1.3 SE``: the figures of a reason."""
        return (f"{self.mean:+.4f} ± {self.standard_error:.4f} (paired SE over {self.n} held-out queries) "
                f"= {self.z:.1f} SE")

    def describe_bar(self, z: float, level_name: str) -> str:
        """``1.76 (Student's t, 14 df, at gate_z 1.645)``: the bar of :meth:`beyond`, in standard errors,
        with the option (``level_name``) that set the level."""
        if self.bar_z is not None:
            return (f"{self.bar_z:.2f} (the largest t of {self.witnesses} held-out judges under random signs, "
                    f"at {level_name} {z:g})")
        return f"{critical_value(z, self.n):.2f} (Student's t, {self.n - 1} df, at {level_name} {z:g})"

    def beyond(self, z: float) -> bool:
        """True when the candidate is better than the start beyond the noise at level ``z``."""
        if self.n < 2 or math.isnan(self.standard_error):
            return False
        bar = self.bar(z)
        return self.mean > bar + abs(bar) * TOLERANCE and (self.mean > 0 or bar < 0)


def paired_difference(before: Sequence[float], after: Sequence[float], higher_is_better: bool = True) -> PairedDifference:
    """The per-query differences ``after − before`` (the same queries in the same order)."""
    if len(before) != len(after):
        raise ValueError(f"per-query values do not pair up: {len(before)} before, {len(after)} after")
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (a - b) for a, b in zip(after, before)]
    n = len(diffs)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan)
    mean = sum(diffs) / n
    variance = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else math.nan
    return PairedDifference(n, mean, math.sqrt(variance / n))


def _t_statistics(differences: list[np.ndarray], signs: np.ndarray) -> np.ndarray:
    """draws × judges: each judge's mean / SE over its first ``len(d)`` queries under each row of signs."""
    columns = []
    for d in differences:
        x = d[None, :] * signs[:, : len(d)]
        mean = x.mean(axis=1)
        se = x.std(axis=1, ddof=1) / math.sqrt(len(d))
        columns.append(np.divide(mean, se, out=np.where(mean > 0, np.inf, np.where(mean < 0, -np.inf, 0.0)), where=se > 0))
    return np.stack(columns, axis=1)


def strongest_witness(judges: Sequence[tuple[Sequence[float], Sequence[float]]], z: float, higher_is_better: bool = True,
                      draws: int = 2000, seed: int = 0) -> tuple[int, PairedDifference]:
    """The index of the judge whose paired test is strongest and that test, its bar set for all the
    judges (module docstring). ``judges``: (before, after) per judge; judge ``k``'s queries are the
    first ``len(before_k)`` of the longest judge's, in the same order. One judge, fewer than two
    queries anywhere or ``z`` ≤ 0: the strongest judge's plain paired test."""
    tests = [paired_difference(before, after, higher_is_better) for before, after in judges]
    strongest = max(range(len(tests)), key=lambda k: tests[k].z if tests[k].n >= 2 else -math.inf)
    if len(tests) < 2 or z <= 0 or min(t.n for t in tests) < 2:
        return strongest, tests[strongest]
    sign = 1.0 if higher_is_better else -1.0
    differences = [sign * (np.asarray(after, dtype=float) - np.asarray(before, dtype=float)) for before, after in judges]
    flips = np.random.default_rng(seed).choice([-1.0, 1.0], size=(draws, max(len(d) for d in differences)))
    null = _t_statistics(differences, flips).max(axis=1)
    bar = float(np.quantile(null, stats.norm.cdf(z)))
    test = tests[strongest]
    return strongest, PairedDifference(test.n, test.mean, test.standard_error, bar_z=bar, witnesses=len(tests))
