"""The user browsing model (UBM; Dupret & Piwowarski, "A user browsing model to predict search
engine click data from past observations", SIGIR 2008).

Examination depends on the rank ``r`` and on the distance ``d = r - r'`` to the last click above
it (``r' = 0`` when nothing above was clicked): a user who has just clicked is likely to look at
the next result, one who skipped several in a row less so.

    P(click at r | last click at r') = γ(r, r - r') · attractiveness(doc at r)

By default ``γ(r, d) = r ** -eta_rank · d ** -eta_distance``; with the default exponents (0.5 and
0.5) a user who clicked nothing yet examines rank r with probability ``1 / r`` — PBM's default —
and one who clicked the result just above examines it with ``1 / sqrt(r)``.

    >>> UserBrowsingClickModel(seed=0).clicks([True, True, False])             # doctest: +SKIP
    [True, True, False]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from finetuning.simulation.click_model import ClickModel, SnippetAttractiveness


class UserBrowsingClickModel(ClickModel):
    """UBM clicks: examination by rank and distance to the previous click.

    Args:
        gamma: an explicit table, ``gamma[r - 1][d - 1]`` = P(examined | rank r, distance d to
            the last click above, d = r when none), for ``d`` in ``1..r``; ranks beyond the table
            use its last row (and distances beyond a row its last value). ``None`` (default): the
            power law below.
        eta_rank: exponent of the rank factor ``r ** -eta_rank`` (default 0.5).
        eta_distance: exponent of the distance factor ``d ** -eta_distance`` (default 0.5).
        attractiveness_relevant: click probability of an examined relevant result (default 0.9).
        attractiveness_irrelevant: click probability of an examined irrelevant result (default 0.05).
        snippets: per-(query, document) attractiveness instead of the two values above
            (default ``None``).
        seed: seeds the generator used when :meth:`clicks` gets no ``rng`` (default 0).
    """

    name = "ubm"

    def __init__(
        self,
        gamma: Sequence[Sequence[float]] | None = None,
        eta_rank: float = 0.5,
        eta_distance: float = 0.5,
        attractiveness_relevant: float = 0.9,
        attractiveness_irrelevant: float = 0.05,
        snippets: SnippetAttractiveness | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(attractiveness_relevant, attractiveness_irrelevant, snippets, seed)
        if eta_rank < 0 or eta_distance < 0:
            raise ValueError("eta_rank and eta_distance must be >= 0")
        if gamma is not None:
            gamma = [[float(p) for p in row] for row in gamma]
            if not gamma or any(not row or any(not 0.0 <= p <= 1.0 for p in row) for row in gamma):
                raise ValueError("gamma must be a non-empty table of probabilities")
        self.gamma = gamma
        self.eta_rank = float(eta_rank)
        self.eta_distance = float(eta_distance)

    def examination_probability(self, rank: int, distance: int) -> float:
        """P(examined | rank, distance to the last click above); ``distance = rank`` when none."""
        if not 1 <= distance <= rank:
            raise ValueError("need 1 <= distance <= rank")
        if self.gamma is not None:
            row = self.gamma[min(rank, len(self.gamma)) - 1]
            return row[min(distance, len(row)) - 1]
        return rank**-self.eta_rank * distance**-self.eta_distance

    def clicks(
        self,
        relevance: Sequence[bool],
        rng: np.random.Generator | None = None,
        *,
        query_id: str | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> list[bool]:
        rng = rng if rng is not None else self._rng
        draws = rng.random(len(relevance))
        attractive = self.attractiveness_values(relevance, query_id, doc_ids)
        clicked = [False] * len(relevance)
        last_click = 0
        for rank in range(1, len(relevance) + 1):
            if draws[rank - 1] < self.examination_probability(rank, rank - last_click) * attractive[rank - 1]:
                clicked[rank - 1] = True
                last_click = rank
        return clicked

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gamma": self.gamma if self.gamma is not None else f"rank^-{self.eta_rank:g} * distance^-{self.eta_distance:g}",
            **self._base_params(),
        }
