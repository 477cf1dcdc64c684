"""The position-based click model (PBM) that decides which shown results a simulated user clicks.

PBM (Craswell et al., "An experimental comparison of click position-bias models", WSDM 2008;
Chuklin et al., "Click Models for Web Search", 2015) factorises a click on the result at rank r
into examination and attractiveness, independently per position:

    P(click | r, doc) = P(examined | r) · P(attractive | doc)

- examination: ``examination[r - 1]`` when a table is given, else ``1 / r ** eta``
  (``eta = 1`` by default: rank 1 is always examined, rank 10 one time in ten);
- attractiveness: ``attractiveness_relevant`` (0.9) for a judged-relevant document,
  ``attractiveness_irrelevant`` (0.05) otherwise — low but not zero, so there are noise clicks.

    >>> model = PositionBasedClickModel(seed=0)
    >>> model.click_probability(rank=1, relevant=True)
    0.9
    >>> model.clicks([True, False, True])                                  # doctest: +SKIP
    [True, False, False]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class PositionBasedClickModel:
    """Position-based clicks with examination decaying with rank.

    Args:
        examination: per-rank examination probabilities (rank 1 first); ranks beyond the table
            use its last value. ``None`` (default): ``1 / rank ** eta``.
        eta: decay exponent when no table is given (default 1.0).
        attractiveness_relevant: click probability of an examined relevant result (default 0.9).
        attractiveness_irrelevant: click probability of an examined irrelevant result (default 0.05).
        seed: seeds the generator used when :meth:`clicks` gets no ``rng`` (default 0).
    """

    def __init__(
        self,
        examination: Sequence[float] | None = None,
        eta: float = 1.0,
        attractiveness_relevant: float = 0.9,
        attractiveness_irrelevant: float = 0.05,
        seed: int = 0,
    ) -> None:
        for name, value in (("attractiveness_relevant", attractiveness_relevant), ("attractiveness_irrelevant", attractiveness_irrelevant)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if examination is not None:
            examination = [float(p) for p in examination]
            if not examination or any(not 0.0 <= p <= 1.0 for p in examination):
                raise ValueError("examination must be a non-empty list of probabilities")
        if eta < 0:
            raise ValueError("eta must be >= 0")
        self.examination = examination
        self.eta = float(eta)
        self.attractiveness_relevant = float(attractiveness_relevant)
        self.attractiveness_irrelevant = float(attractiveness_irrelevant)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def examination_probability(self, rank: int) -> float:
        """P(examined | rank), rank 1-based."""
        if rank < 1:
            raise ValueError("ranks are 1-based")
        if self.examination is not None:
            return self.examination[min(rank, len(self.examination)) - 1]
        return 1.0 / rank**self.eta

    def attractiveness(self, relevant: bool) -> float:
        return self.attractiveness_relevant if relevant else self.attractiveness_irrelevant

    def click_probability(self, rank: int, relevant: bool) -> float:
        """P(click | rank, relevance) = examination · attractiveness."""
        return self.examination_probability(rank) * self.attractiveness(relevant)

    def clicks(self, relevance: Sequence[bool], rng: np.random.Generator | None = None) -> list[bool]:
        """Sample clicks for a result list (``relevance[i]`` is the result at rank ``i + 1``)."""
        rng = rng if rng is not None else self._rng
        draws = rng.random(len(relevance))
        return [bool(draw < self.click_probability(rank, bool(rel))) for rank, (draw, rel) in enumerate(zip(draws, relevance), start=1)]

    def params(self) -> dict[str, Any]:
        """The model's parameters (recorded in each simulated session's ``search_meta``)."""
        return {
            "name": "pbm",
            "examination": self.examination if self.examination is not None else f"1/rank^{self.eta:g}",
            "attractiveness_relevant": self.attractiveness_relevant,
            "attractiveness_irrelevant": self.attractiveness_irrelevant,
        }
