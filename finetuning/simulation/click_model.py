"""Click models: which shown results a simulated user clicks. This module holds their common
contract (:class:`ClickModel`), per-(query, document) snippet attractiveness with misleading
snippets (:class:`SnippetAttractiveness`) and the position-based model (PBM), the default.

PBM (Craswell et al., "An experimental comparison of click position-bias models", WSDM 2008;
Chuklin et al., "Click Models for Web Search", 2015) factorises a click on the result at rank r
into examination and attractiveness, independently per position:

    P(click | r, doc) = P(examined | r) · P(attractive | doc)

- examination: ``examination[r - 1]`` when a table is given, else ``1 / r ** eta``
  (``eta = 1`` by default: rank 1 is always examined, rank 10 one time in ten);
- attractiveness: ``attractiveness_relevant`` (0.9) for a judged-relevant document,
  ``attractiveness_irrelevant`` (0.05) otherwise — low but not zero, so there are noise clicks;
  or, with ``snippets=``, a fixed value per (query, document) pair (misleading snippets).

    >>> model = PositionBasedClickModel(seed=0)
    >>> model.click_probability(rank=1, relevant=True)
    0.9
    >>> model.clicks([True, False, True])                                  # doctest: +SKIP
    [True, False, False]

The other models live beside it (``cascade.py``: cascade and DBN; ``ubm.py``; ``trust_bias.py``)
and are found by name in ``registry.py``.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np


def check_probability(name: str, value: float) -> float:
    """``value`` as a float, or ``ValueError`` when it is not within [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value}")
    return float(value)


def check_table(name: str, table: Sequence[float] | None) -> list[float] | None:
    """A per-rank probability table as a list (``None`` stays ``None``)."""
    if table is None:
        return None
    values = [float(p) for p in table]
    if not values or any(not 0.0 <= p <= 1.0 for p in values):
        raise ValueError(f"{name} must be a non-empty list of probabilities")
    return values


def rank_table_value(table: Sequence[float], rank: int) -> float:
    """``table[rank - 1]``; ranks beyond the table use its last value."""
    if rank < 1:
        raise ValueError("ranks are 1-based")
    return table[min(rank, len(table)) - 1]


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


class SnippetAttractiveness:
    """Per-(query, document) attractiveness, the same in every session of a query.

    Real result snippets differ: some relevant documents look dull, and some irrelevant ones
    look like the answer and attract clicks every time the query is issued — correlated noise
    that more sessions of the same query do not average away (the per-(query, document)
    attractiveness of Chuklin et al., "Click Models for Web Search", 2015, ch. 3; misleading
    snippets as studied by Yue, Patel & Roehrig, "Beyond position bias: examining result
    attractiveness as a source of presentation bias in clickthrough data", WWW 2010).

    Each pair's value is drawn once from a generator keyed by ``(seed, query id, document id)``,
    so it does not depend on the session, the rank or which other documents were shown.

    Args:
        relevant_low: lowest attractiveness of a relevant pair (default 0.7).
        relevant_high: highest attractiveness of a relevant pair (default 1.0); a relevant pair's
            value is uniform in ``[relevant_low, relevant_high]`` (mean 0.85).
        irrelevant: attractiveness of an ordinary irrelevant pair (default 0.05).
        misleading_share: share of irrelevant pairs whose snippet misleads (default 0.1).
        misleading: attractiveness of a misleading snippet (default 0.6): an examined misleading
            result is clicked in 60 % of the sessions of its query.
        seed: decides which pairs mislead and each relevant pair's value (default 0).
    """

    def __init__(
        self,
        relevant_low: float = 0.7,
        relevant_high: float = 1.0,
        irrelevant: float = 0.05,
        misleading_share: float = 0.1,
        misleading: float = 0.6,
        seed: int = 0,
    ) -> None:
        self.relevant_low = check_probability("relevant_low", relevant_low)
        self.relevant_high = check_probability("relevant_high", relevant_high)
        if self.relevant_low > self.relevant_high:
            raise ValueError("relevant_low must not exceed relevant_high")
        self.irrelevant = check_probability("irrelevant", irrelevant)
        self.misleading_share = check_probability("misleading_share", misleading_share)
        self.misleading = check_probability("misleading", misleading)
        self.seed = int(seed)
        self._cache: dict[tuple[str, str], tuple[float, float]] = {}

    def _draws(self, query_id: str, doc_id: str) -> tuple[float, float]:
        key = (query_id, doc_id)
        if key not in self._cache:
            u = np.random.default_rng([self.seed, _crc(query_id), _crc(doc_id), 0x5A1E]).random(2)
            self._cache[key] = (float(u[0]), float(u[1]))
        return self._cache[key]

    def is_misleading(self, query_id: str, doc_id: str, relevant: bool) -> bool:
        """Whether the pair's snippet misleads (only irrelevant pairs can)."""
        return not relevant and self._draws(query_id, doc_id)[0] < self.misleading_share

    def attractiveness(self, query_id: str, doc_id: str, relevant: bool) -> float:
        """P(click | examined) of the pair."""
        first, second = self._draws(query_id, doc_id)
        if relevant:
            return self.relevant_low + (self.relevant_high - self.relevant_low) * second
        return self.misleading if first < self.misleading_share else self.irrelevant

    def params(self) -> dict[str, Any]:
        return {
            "relevant_low": self.relevant_low,
            "relevant_high": self.relevant_high,
            "irrelevant": self.irrelevant,
            "misleading_share": self.misleading_share,
            "misleading": self.misleading,
            "seed": self.seed,
        }


class ClickModel:
    """What :func:`finetuning.simulation.simulate_sessions` needs from a simulated user.

    Subclasses implement :meth:`clicks` and :meth:`params`. Relevance-dependent attractiveness
    comes from :meth:`attractiveness_values`: ``attractiveness_relevant`` /
    ``attractiveness_irrelevant`` by default, a :class:`SnippetAttractiveness` per (query,
    document) pair when the model has ``snippets``.

    Determinism: every draw comes from the ``rng`` passed to :meth:`clicks` (the simulator seeds
    one per session); without one, from the model's own generator seeded by ``seed``.
    """

    name = "click_model"

    def __init__(
        self,
        attractiveness_relevant: float = 0.9,
        attractiveness_irrelevant: float = 0.05,
        snippets: SnippetAttractiveness | None = None,
        seed: int = 0,
    ) -> None:
        self.attractiveness_relevant = check_probability("attractiveness_relevant", attractiveness_relevant)
        self.attractiveness_irrelevant = check_probability("attractiveness_irrelevant", attractiveness_irrelevant)
        self.snippets = snippets
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def attractiveness(self, relevant: bool) -> float:
        """P(click | examined) by relevance alone (without snippets)."""
        return self.attractiveness_relevant if relevant else self.attractiveness_irrelevant

    def attractiveness_values(
        self, relevance: Sequence[bool], query_id: str | None = None, doc_ids: Sequence[str] | None = None
    ) -> np.ndarray:
        """P(click | examined) of each shown result (rank order)."""
        if self.snippets is None:
            return np.array([self.attractiveness(bool(rel)) for rel in relevance], dtype=float)
        if query_id is None or doc_ids is None or len(doc_ids) != len(relevance):
            raise ValueError("a click model with snippets needs query_id and the shown doc_ids")
        return np.array(
            [self.snippets.attractiveness(query_id, doc_id, bool(rel)) for doc_id, rel in zip(doc_ids, relevance)],
            dtype=float,
        )

    def clicks(
        self,
        relevance: Sequence[bool],
        rng: np.random.Generator | None = None,
        *,
        query_id: str | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> list[bool]:
        """Sample clicks for one result page (``relevance[i]`` is the result at rank ``i + 1``;
        ``query_id`` and ``doc_ids`` are needed only by per-pair attractiveness)."""
        raise NotImplementedError

    def _base_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "attractiveness_relevant": self.attractiveness_relevant,
            "attractiveness_irrelevant": self.attractiveness_irrelevant,
        }
        if self.snippets is not None:
            params["snippets"] = self.snippets.params()
        return params

    def params(self) -> dict[str, Any]:
        """The model's parameters (recorded in each simulated session's ``search_meta``)."""
        return {"name": self.name, **self._base_params()}


class PositionBasedClickModel(ClickModel):
    """Position-based clicks with examination decaying with rank (PBM).

    Args:
        examination: per-rank examination probabilities (rank 1 first); ranks beyond the table
            use its last value. ``None`` (default): ``1 / rank ** eta``.
        eta: decay exponent when no table is given (default 1.0).
        attractiveness_relevant: click probability of an examined relevant result (default 0.9).
        attractiveness_irrelevant: click probability of an examined irrelevant result (default 0.05).
        snippets: per-(query, document) attractiveness instead of the two values above
            (default ``None``); see :class:`SnippetAttractiveness`.
        seed: seeds the generator used when :meth:`clicks` gets no ``rng`` (default 0).
    """

    name = "pbm"

    def __init__(
        self,
        examination: Sequence[float] | None = None,
        eta: float = 1.0,
        attractiveness_relevant: float = 0.9,
        attractiveness_irrelevant: float = 0.05,
        snippets: SnippetAttractiveness | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(attractiveness_relevant, attractiveness_irrelevant, snippets, seed)
        if eta < 0:
            raise ValueError("eta must be >= 0")
        self.examination = check_table("examination", examination)
        self.eta = float(eta)

    def examination_probability(self, rank: int) -> float:
        """P(examined | rank), rank 1-based."""
        if rank < 1:
            raise ValueError("ranks are 1-based")
        if self.examination is not None:
            return rank_table_value(self.examination, rank)
        return 1.0 / rank**self.eta

    def click_probability(self, rank: int, relevant: bool) -> float:
        """P(click | rank, relevance) = examination · attractiveness (without snippets)."""
        return self.examination_probability(rank) * self.attractiveness(relevant)

    def clicks(
        self,
        relevance: Sequence[bool],
        rng: np.random.Generator | None = None,
        *,
        query_id: str | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> list[bool]:
        """Sample clicks for a result list (``relevance[i]`` is the result at rank ``i + 1``)."""
        rng = rng if rng is not None else self._rng
        draws = rng.random(len(relevance))
        if self.snippets is None:
            return [bool(draw < self.click_probability(rank, bool(rel))) for rank, (draw, rel) in enumerate(zip(draws, relevance), start=1)]
        attractive = self.attractiveness_values(relevance, query_id, doc_ids)
        return [bool(draw < self.examination_probability(rank) * a) for rank, (draw, a) in enumerate(zip(draws, attractive), start=1)]

    def params(self) -> dict[str, Any]:
        """The model's parameters (recorded in each simulated session's ``search_meta``)."""
        return {
            "name": self.name,
            "examination": self.examination if self.examination is not None else f"1/rank^{self.eta:g}",
            **self._base_params(),
        }
