"""``ClickRelevanceModel``: how likely a shown result is relevant, from all its clicks and skips.

Why: inverse-propensity weights are unbiased but, at deep ranks, far too noisy to label single
results. On SciFact with 10 simulated sessions per query, one stray click at rank 10 among ten
sessions gets the IPS estimate ``1/θ_10 / 10 = 1.0`` — the same weight as a relevant result
clicked in nine sessions at rank 1 — and such noise positives carried 46 % of all positive weight.
A relevant result at rank 10 is clicked about as often (0.9 · 0.1 per session), so the click
*count* cannot tell them apart; only a prior and the click rates of both kinds of result can.

The model is the two-class position-based click model (Richardson et al. 2007; Chuklin et al.,
"Click Models for Web Search", 2015, ch. 4, with binary relevance): a result of a query is
relevant with prior probability ``π_b``, where b is the best rank it was shown at (the search
engine's own ranking is evidence: relevance falls with rank); in each session where it is shown at
rank r it is examined with probability ``θ_r`` and, when examined, clicked with probability ``a₁``
if relevant and ``a₀`` if not (noise clicks). ``θ`` is the examination estimate of
:class:`~finetuning.confidences.PositionBiasConfidences`; EM over all (query, result) pairs of the
training sessions estimates ``a₁``, ``a₀`` and ``π_b`` (each rank's prior shrunk towards the
overall one). The posterior

    P(relevant | its clicks and skips) = π_b L₁ / (π_b L₁ + (1 − π_b) L₀),
    L_k = Π_sessions (θ_r a_k)^click (1 − θ_r a_k)^(1 − click)

then weighs the result everywhere: a clicked result is a positive with that weight, a skipped
one a negative with weight ``1 − P(relevant)``, and held-out validation grades clicked results by
it. Every session that showed the result is evidence, sessions without a click included.
Measured on SciFact's simulated clicks (seed 2, 10 sessions per query): noise positives' share of
the positive weight fell from 46 % (pooled IPS) to 11 %, while relevant positives kept 566 of 621.
(Learning ``θ`` in the same EM, or forcing the prior to fall with rank, let ``θ`` and the prior
trade off at deep ranks and kept 15–31 % noise.)

Dwell time. A result whose snippet promises what the page does not hold is clicked like a
relevant one, in every session: no click model tells it from a relevant result by its clicks
(attractiveness is not satisfaction: Chapelle & Zhang 2009). How long the user stayed does (Fox et
al. 2005; Kim et al. 2014). Where the log shows a click's dwell (``FineTuningInput.click_dwell``:
reported by the service, or the time to the session's next event), the click is a quick return
(under ``satisfied_dwell_seconds``, 30 s) or a satisfied visit, with probability ``q₁`` for a
relevant result and ``q₀ ≥ q₁`` for one that is not, and a third class joins the mixture:
*misleading*, not relevant yet clicked at its own rate ``θ_r a₂`` (a share ``μ`` of the results that
are not relevant). ``L_k`` then also multiplies ``q_k`` or ``1 − q_k`` over the clicks with observed
dwell, and P(relevant) is the relevant class's posterior. EM fits ``q₀``, ``q₁``, ``a₂`` and ``μ``
with the rest. The misleading class is kept only where it earns its two parameters by BIC against
the two-class model with the same dwell rates: dwell that separates the classes weakly leaves
them unidentified, and the third class would take weight from relevant results. When no dwell is
observed, or the fitted dwell does not separate the classes (``q₀ ≤ q₁``), the model is the
two-class one above.

    model = ClickRelevanceModel().fit(train_sessions)
    model.relevance(sessions_of_one_query)     # {object_id: P(relevant)}
    model(sessions)                            # per session: clicked → P(rel), skipped → 1 − P(rel)
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Hashable, Sequence

import numpy as np

from finetuning.confidences import PositionBiasConfidences
from finetuning.inputs.input import FineTuningInput


def _maximise_concave(f, low: float, high: float, iterations: int = 60) -> float:
    """Argmax of a concave function of one variable on [low, high] (golden-section search)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc < fd:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
        else:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
    return (a + b) / 2


def _bernoulli_log_likelihood(clicks: np.ndarray, exposures: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(np.sum(clicks * np.log(p) + (exposures - clicks) * np.log1p(-p)))


class ClickRelevanceModel:
    """Position-based click model with relevant and irrelevant results (and misleading ones where
    dwell is observed), fitted by EM (see module docstring).

    Args:
        max_rank: ranks beyond share the last examination estimate.
        iterations, tolerance: EM stops after ``iterations`` or when the parameters move less.
        prior, relevant_click, noise_click: starting values of ``π``, ``a₁``, ``a₀`` (and the values
            used when the model is applied before :meth:`fit`).
        prior_strength: how many results' worth the overall prior counts in each rank's prior.
        rank_rate_strength: ``None``: one click rate per class, ``θ_r a_k`` at rank r (the PBM).
            A number s: each rank gets its own click rates per class, shrunk towards ``θ_r a_k`` by s
            exposures' worth — clicks on irrelevant results may then fall with rank faster than
            examination does (trust bias, Agarwal et al. 2019).
        satisfied_dwell_seconds: a click whose dwell was observed is a quick return below this
            (30 s, Fox et al. 2005) and a satisfied visit above; ``None`` ignores dwell.
    """

    def __init__(
        self,
        max_rank: int = 100,
        iterations: int = 100,
        tolerance: float = 1e-5,
        prior: float = 0.1,
        relevant_click: float = 0.7,
        noise_click: float = 0.05,
        prior_strength: float = 10.0,
        rank_rate_strength: float | None = None,
        satisfied_dwell_seconds: float | None = 30.0,
    ) -> None:
        if not 0 < noise_click < relevant_click <= 1:
            raise ValueError("need 0 < noise_click < relevant_click <= 1")
        if not 0 < prior < 1:
            raise ValueError("prior must be in (0, 1)")
        self.max_rank = max_rank
        self.iterations = iterations
        self.tolerance = tolerance
        self.prior = prior
        self.relevant_click = relevant_click
        self.noise_click = noise_click
        self.prior_strength = prior_strength
        self.rank_rate_strength = rank_rate_strength
        self.satisfied_dwell_seconds = satisfied_dwell_seconds
        self.quick_return: tuple[float, float]
        self.misleading_share: float
        self.misleading_click: float
        self._start_dwell(misleading=False)
        # per-rank click probabilities (relevant, irrelevant) when fitted with rank_rate_strength
        self.rank_click_rates: tuple[list[float], list[float]] | None = None
        self.examination: list[float] = [1.0 / r for r in range(1, max_rank + 1)]
        # prior by the best rank a result was shown at: relevance falls with rank
        self.priors: list[float] = [prior] * max_rank

    # --- evidence ---------------------------------------------------------------------------
    def _rank_index(self, item: FineTuningInput, object_id: str) -> int:
        return min(max(item.rank(object_id), 1), self.max_rank) - 1

    def _quick(self, dwell: float | None) -> int:
        """1: back within ``satisfied_dwell_seconds``, 0: stayed longer, -1: dwell not observed."""
        if dwell is None or self.satisfied_dwell_seconds is None:
            return -1
        return int(dwell < self.satisfied_dwell_seconds)

    def _evidence(self, sessions: Sequence[FineTuningInput], key=lambda item: str(item.query)):
        """{(query key, object id): [(rank index, clicked, quick), ...]} over every session that
        showed it (``quick``: see :meth:`_quick`; -1 for a skip)."""
        evidence: dict[tuple[Hashable, str], list[tuple[int, int, int]]] = defaultdict(list)
        for item in sessions:
            clicked, dwell = set(item.clicked_ids), item.click_dwell
            query = key(item)
            for object_id in item.results:
                was_clicked = object_id in clicked
                quick = self._quick(dwell.get(object_id)) if was_clicked else -1
                evidence[(query, object_id)].append((self._rank_index(item, object_id), int(was_clicked), quick))
        return evidence

    @staticmethod
    def _flatten(exposures: list[list[tuple[int, int, int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pair index, rank index, click, quick) per exposure."""
        pair = np.fromiter((n for n, seen in enumerate(exposures) for _ in seen), dtype=np.int64)
        rank = np.fromiter((r for seen in exposures for r, _, _ in seen), dtype=np.int64)
        click = np.fromiter((c for seen in exposures for _, c, _ in seen), dtype=np.float64)
        quick = np.fromiter((q for seen in exposures for _, _, q in seen), dtype=np.float64)
        return pair, rank, click, quick

    def _log_likelihoods(self, pair: np.ndarray, rank: np.ndarray, click: np.ndarray, quick: np.ndarray,
                         n_pairs: int) -> np.ndarray:
        """log L of every pair (columns) under each class (rows: irrelevant, relevant, misleading):
        its clicks and skips, and the dwell of its clicks where observed."""
        known = quick >= 0
        quick_relevant, quick_not = self.quick_return
        rows = []
        for p, q in zip(self._click_probabilities(rank), (quick_not, quick_relevant, quick_not)):
            p = np.clip(p, 1e-9, 1 - 1e-9)
            log_l = click * np.log(p) + (1 - click) * np.log1p(-p)
            log_l += np.where(known, quick * math.log(q) + (1 - quick) * math.log1p(-q), 0.0)
            rows.append(np.bincount(pair, weights=log_l, minlength=n_pairs))
        return np.stack(rows)

    def _click_probabilities(self, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(click | shown at rank) of an irrelevant, a relevant and a misleading result, per exposure."""
        theta = np.asarray(self.examination)[rank]
        if self.rank_click_rates is not None:
            relevant, irrelevant = np.asarray(self.rank_click_rates[0])[rank], np.asarray(self.rank_click_rates[1])[rank]
        else:
            relevant, irrelevant = theta * self.relevant_click, theta * self.noise_click
        return irrelevant, relevant, theta * self.misleading_click

    def _log_joint(self, log_l: np.ndarray, best_rank: np.ndarray | None) -> np.ndarray:
        """log P(class, evidence) of every pair (rows as in :meth:`_log_likelihoods`); prior by best
        rank, or the overall prior where ``best_rank`` is None."""
        prior = np.clip(np.asarray(self.priors)[best_rank] if best_rank is not None else np.full(log_l.shape[1], self.prior), 1e-6, 1 - 1e-6)
        with np.errstate(divide="ignore"):
            log_prior = np.stack([np.log1p(-prior) + math.log1p(-self.misleading_share), np.log(prior),
                                  np.log1p(-prior) + np.log(self.misleading_share)])
        return log_prior + log_l

    def _posterior(self, log_l: np.ndarray, best_rank: np.ndarray | None) -> np.ndarray:
        """P(class | evidence) of every pair (rows as in :meth:`_log_likelihoods`)."""
        z = self._log_joint(log_l, best_rank)
        z = np.exp(z - z.max(axis=0))
        return z / z.sum(axis=0)

    def _log_evidence(self, pair: np.ndarray, rank: np.ndarray, click: np.ndarray, quick: np.ndarray, best: np.ndarray) -> float:
        """log P(all clicks, skips and dwell) under the current parameters (summed over the pairs)."""
        z = self._log_joint(self._log_likelihoods(pair, rank, click, quick, len(best)), best)
        top = z.max(axis=0)
        return float(np.sum(top + np.log(np.exp(z - top).sum(axis=0))))

    @staticmethod
    def _best_ranks(pair: np.ndarray, rank: np.ndarray, n_pairs: int) -> np.ndarray:
        best = np.full(n_pairs, np.iinfo(np.int64).max)
        np.minimum.at(best, pair, rank)
        return best

    # --- fitting ----------------------------------------------------------------------------
    def fit(self, inputs: Sequence[FineTuningInput]) -> "ClickRelevanceModel":
        """``θ`` from the position-bias estimator, then ``a₁``, ``a₀`` and ``π_b`` (and, where dwell
        is observed, ``q₁``, ``q₀``, ``a₂`` and ``μ``) by EM from all (query, result) pairs of ``inputs``."""
        self.examination = PositionBiasConfidences(max_rank=self.max_rank).estimate(inputs)
        evidence = self._evidence(inputs)
        if not evidence or not any(c for seen in evidence.values() for _, c, _ in seen):
            return self
        exposures = list(evidence.values())
        pair, rank, click, quick = self._flatten(exposures)
        known = (quick >= 0).astype(np.float64)
        best = self._best_ranks(pair, rank, len(exposures))
        pairs_at = np.bincount(best, minlength=self.max_rank).astype(float)
        theta = np.asarray(self.examination)  # fixed during EM
        data = (pair, rank, click, quick, known, best, pairs_at, theta)
        start = dict(vars(self))
        self._em(*data, misleading=False)
        if known.any():
            # The misleading class must earn its two parameters (μ, a₂) in the evidence: BIC
            # (Schwarz 1978) over the pairs. Dwell that barely separates the classes leaves the
            # classes unidentified, and the third one would take weight from relevant results.
            two_class, log_evidence = dict(vars(self)), self._log_evidence(pair, rank, click, quick, best)
            vars(self).update(start)
            self._em(*data, misleading=True)
            if self._log_evidence(pair, rank, click, quick, best) - log_evidence <= math.log(len(exposures)):
                vars(self).update(two_class)
        return self

    def _em(self, pair, rank, click, quick, known, best, pairs_at, theta, misleading: bool) -> None:
        """EM from the current parameters, with or without the misleading class."""
        R, dwell_seen = self.max_rank, bool(known.any())
        self._start_dwell(misleading and dwell_seen)
        for _ in range(self.iterations):
            before = self._state()
            posterior = self._posterior(self._log_likelihoods(pair, rank, click, quick, len(best)), best)
            g0, g1, g2 = posterior[:, pair]
            # per rank and class: expected exposures and clicks
            (e0, c0), (e1, c1), (e2, c2) = ((np.bincount(rank, weights=g, minlength=R), np.bincount(rank, weights=g * click, minlength=R))
                                            for g in (g0, g1, g2))
            self.prior = float(np.clip(posterior[1].mean(), 1e-4, 1 - 1e-4))
            # per best rank, shrunk towards the overall prior (ranks with few results)
            by_rank = np.bincount(best, weights=posterior[1], minlength=R)
            priors = [(by_rank[r] + self.prior_strength * self.prior) / (pairs_at[r] + self.prior_strength) for r in range(R)]
            self.priors = [float(np.clip(p, 1e-4, 1 - 1e-4)) for p in priors]
            self.relevant_click = _maximise_concave(lambda a: _bernoulli_log_likelihood(c1, e1, theta * a), 1e-4, 1.0)
            self.noise_click = _maximise_concave(lambda a: _bernoulli_log_likelihood(c0, e0, theta * a), 1e-5, self.relevant_click)
            if dwell_seen:
                self._fit_dwell(g1 * known, (g0 + g2) * known, known, quick, posterior)
                if self.misleading_share > 0:
                    self.misleading_click = _maximise_concave(lambda a: _bernoulli_log_likelihood(c2, e2, theta * a),
                                                              self.noise_click, 1.0)
            if self.rank_rate_strength is not None:
                s = self.rank_rate_strength
                p1 = (c1 + s * theta * self.relevant_click) / (e1 + s)
                p0 = np.minimum((c0 + s * theta * self.noise_click) / (e0 + s), p1)
                self.rank_click_rates = (p1.tolist(), p0.tolist())
            if max(abs(x - y) for x, y in zip(before, self._state())) < self.tolerance:
                break

    def _start_dwell(self, misleading: bool) -> None:
        """Starting values of the dwell parameters: ``q₁``, ``q₀`` = P(back within
        satisfied_dwell_seconds | click) of a relevant and of a not relevant result, and the
        misleading class (not relevant, yet clicked like a relevant result), which only dwell can
        tell from the relevant one: it starts with a small share when asked for, else it is off."""
        self.quick_return = (0.3, 0.7)
        self.misleading_share = 0.05 if misleading else 0.0
        self.misleading_click = self.relevant_click

    def _fit_dwell(self, relevant: np.ndarray, not_relevant: np.ndarray, known: np.ndarray, quick: np.ndarray,
                   posterior: np.ndarray) -> None:
        """P(quick return | click) per class from the clicks with observed dwell (weighted by each
        exposure's class posterior; smoothed by one quick and one long visit each), and the share of
        misleading results among the not relevant. A relevant result is left quickly less often than
        one that is not; where the log says otherwise, dwell tells the classes nothing: both get the
        pooled rate and the misleading class is switched off."""
        rates = [float((np.sum(w * quick) + 1.0) / (np.sum(w) + 2.0)) for w in (relevant, not_relevant)]
        if rates[1] <= rates[0]:
            pooled = float((np.sum(known * quick) + 1.0) / (np.sum(known) + 2.0))
            self.quick_return, self.misleading_share = (pooled, pooled), 0.0
            return
        self.quick_return = (rates[0], rates[1])
        if self.misleading_share > 0:
            share = posterior[2].sum() / max(posterior[0].sum() + posterior[2].sum(), 1e-12)
            self.misleading_share = float(np.clip(share, 1e-4, 0.5))

    def _state(self) -> tuple[float, ...]:
        rates = self.rank_click_rates or ([0.0] * self.max_rank, [0.0] * self.max_rank)
        return (*self.priors, self.relevant_click, self.noise_click, *self.quick_return, self.misleading_share,
                self.misleading_click, *rates[0], *rates[1])

    def params(self) -> dict[str, Any]:
        return {"prior": self.prior, "priors": self.priors[:10], "relevant_click": self.relevant_click, "noise_click": self.noise_click,
                "examination": self.examination[:10], "quick_return": list(self.quick_return),
                "misleading_share": self.misleading_share, "misleading_click": self.misleading_click,
                **({"rank_click_rates": [rates[:10] for rates in self.rank_click_rates]} if self.rank_click_rates else {})}

    # --- applying -----------------------------------------------------------------------------
    def relevance(self, sessions: Sequence[FineTuningInput], prior_by_rank: bool = True) -> dict[str, float]:
        """P(relevant) of every result shown in ``sessions``, which are all sessions of one query;
        ``prior_by_rank=False`` starts every result from the overall prior ``π``, not from its rank's."""
        evidence = self._evidence(sessions, key=lambda item: None)
        if not evidence:
            return {}
        exposures = list(evidence.values())
        pair, rank, click, quick = self._flatten(exposures)
        best = self._best_ranks(pair, rank, len(exposures)) if prior_by_rank else None
        posterior = self._posterior(self._log_likelihoods(pair, rank, click, quick, len(exposures)), best)[1]
        return {object_id: float(p) for (_, object_id), p in zip(evidence, posterior)}

    def __call__(self, inputs: Sequence[FineTuningInput]) -> list[dict[str, float]]:
        """Per input: a clicked result's P(relevant), a skipped one's P(not relevant), both from the
        evidence of all ``inputs`` of the same query."""
        by_query: dict[str, list[FineTuningInput]] = defaultdict(list)
        for item in inputs:
            by_query[str(item.query)].append(item)
        relevance = {query: self.relevance(sessions) for query, sessions in by_query.items()}
        out = []
        for item in inputs:
            rel = relevance[str(item.query)]
            clicked = set(item.clicked_ids)
            out.append({o: rel[o] if o in clicked else 1.0 - rel[o] for o in item.results})
        return out
