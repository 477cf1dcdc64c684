"""Cascade-family click models: the user scans the result list top-down and may stop.

- :class:`DynamicBayesianNetworkClickModel` (DBN; Chapelle & Zhang, "A dynamic Bayesian network
  click model for web search ranking", WWW 2009): at each rank the user clicks with the result's
  attractiveness; after a click she is satisfied with the result's satisfaction probability and
  stops; otherwise (no click, or an unsatisfying click) she goes on to the next rank with
  probability ``gamma`` (perseverance) and abandons the page otherwise.
- :class:`CascadeClickModel` (Craswell et al., "An experimental comparison of click position-bias
  models", WSDM 2008): the DBN with ``gamma = 1`` and every click satisfying — the user examines
  results in order until the first click and stops there, so a session has at most one click
  and ``P(click at r) = a_r · Π_{i<r} (1 - a_i)``.

    >>> DynamicBayesianNetworkClickModel(seed=0).clicks([False, True, True])      # doctest: +SKIP
    [False, True, False]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from finetuning.simulation.click_model import ClickModel, SnippetAttractiveness, check_probability


class DynamicBayesianNetworkClickModel(ClickModel):
    """DBN clicks: examination ends at a satisfying click or when the user's perseverance runs out.

    Every session draws three uniforms per shown result (attraction, satisfaction,
    continuation) from the session's generator, so sessions are reproducible per seed.

    Args:
        gamma: probability of going on to the next rank after an unsatisfying click or no click
            (perseverance; default 0.8: with no click, rank 10 is examined in 13 % of sessions).
        satisfaction_relevant: probability that a clicked relevant result satisfies the user
            (default 0.6).
        satisfaction_irrelevant: probability that a clicked irrelevant result satisfies the user
            (default 0.1).
        attractiveness_relevant: click probability of an examined relevant result (default 0.9).
        attractiveness_irrelevant: click probability of an examined irrelevant result (default 0.05).
        snippets: per-(query, document) attractiveness instead of the two values above
            (default ``None``); see :class:`~finetuning.simulation.click_model.SnippetAttractiveness`.
        seed: seeds the generator used when :meth:`clicks` gets no ``rng`` (default 0).
    """

    name = "dbn"

    def __init__(
        self,
        gamma: float = 0.8,
        satisfaction_relevant: float = 0.6,
        satisfaction_irrelevant: float = 0.1,
        attractiveness_relevant: float = 0.9,
        attractiveness_irrelevant: float = 0.05,
        snippets: SnippetAttractiveness | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(attractiveness_relevant, attractiveness_irrelevant, snippets, seed)
        self.gamma = check_probability("gamma", gamma)
        self.satisfaction_relevant = check_probability("satisfaction_relevant", satisfaction_relevant)
        self.satisfaction_irrelevant = check_probability("satisfaction_irrelevant", satisfaction_irrelevant)

    def satisfaction(self, relevant: bool) -> float:
        """P(satisfied | clicked) by relevance."""
        return self.satisfaction_relevant if relevant else self.satisfaction_irrelevant

    def clicks(
        self,
        relevance: Sequence[bool],
        rng: np.random.Generator | None = None,
        *,
        query_id: str | None = None,
        doc_ids: Sequence[str] | None = None,
    ) -> list[bool]:
        rng = rng if rng is not None else self._rng
        attract_draws, satisfy_draws, continue_draws = rng.random((3, len(relevance)))
        attractive = self.attractiveness_values(relevance, query_id, doc_ids)
        clicked = [False] * len(relevance)
        for i, rel in enumerate(relevance):
            if attract_draws[i] < attractive[i]:
                clicked[i] = True
                if satisfy_draws[i] < self.satisfaction(bool(rel)):
                    break
            if continue_draws[i] >= self.gamma:
                break
        return clicked

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gamma": self.gamma,
            "satisfaction_relevant": self.satisfaction_relevant,
            "satisfaction_irrelevant": self.satisfaction_irrelevant,
            **self._base_params(),
        }


class CascadeClickModel(DynamicBayesianNetworkClickModel):
    """The cascade model: examine results in order, click at most once, stop at the click.

    Args:
        attractiveness_relevant: click probability of an examined relevant result (default 0.9).
        attractiveness_irrelevant: click probability of an examined irrelevant result (default 0.05).
        snippets: per-(query, document) attractiveness instead of the two values above
            (default ``None``).
        seed: seeds the generator used when :meth:`clicks` gets no ``rng`` (default 0).
    """

    name = "cascade"

    def __init__(
        self,
        attractiveness_relevant: float = 0.9,
        attractiveness_irrelevant: float = 0.05,
        snippets: SnippetAttractiveness | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            gamma=1.0, satisfaction_relevant=1.0, satisfaction_irrelevant=1.0,
            attractiveness_relevant=attractiveness_relevant, attractiveness_irrelevant=attractiveness_irrelevant,
            snippets=snippets, seed=seed,
        )

    def params(self) -> dict[str, Any]:
        return {"name": self.name, **self._base_params()}
