"""Trust bias (Agarwal, Wang, Li, Bendersky & Najork, "Addressing trust bias for unbiased
learning-to-rank", WWW 2019): users trust the engine's order, so an examined result near the top
is clicked more readily even when it is irrelevant — click noise that depends on the rank.

    P(click | r, relevant)   = θ(r) · ε⁺(r)
    P(click | r, irrelevant) = θ(r) · ε⁻(r)

- examination θ(r): ``examination[r - 1]`` when a table is given, else ``1 / r ** eta``;
- ε⁺(r) (an examined relevant result is clicked): ``epsilon_relevant`` table, else
  ``1 - (min(r, 20) + 1) / 100`` (0.98 at rank 1, 0.89 at rank 10);
- ε⁻(r) (an examined irrelevant result is clicked): ``epsilon_irrelevant`` table, else
  ``noise_top / r`` (0.65 at rank 1, 0.065 at rank 10).

The default ε shapes follow the semi-synthetic trust-bias setups of that literature (Agarwal et
al. 2019; Vardasbi, Oosterhuis & de Rijke, "When inverse propensity scoring does not work:
affine corrections for unbiased learning to rank", CIKM 2020): near-certain clicks on examined
relevant results, and irrelevant-click rates that fall with rank beyond what examination alone
explains — unlike PBM, where an examined irrelevant result is clicked equally often anywhere.

    >>> TrustBiasClickModel().click_probability(1, relevant=False)
    0.65
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from finetuning.simulation.click_model import ClickModel, check_probability, check_table, rank_table_value


class TrustBiasClickModel(ClickModel):
    """Position-based clicks whose correctness depends on the rank (TrustPBM).

    Args:
        examination: per-rank examination probabilities (rank 1 first; ranks beyond the table
            use its last value). ``None`` (default): ``1 / rank ** eta``.
        eta: examination decay exponent when no table is given (default 1.0).
        epsilon_relevant: per-rank P(click | examined, relevant). ``None`` (default):
            ``1 - (min(rank, 20) + 1) / 100``.
        epsilon_irrelevant: per-rank P(click | examined, irrelevant). ``None`` (default):
            ``noise_top / rank``.
        noise_top: ε⁻ at rank 1 when no ``epsilon_irrelevant`` table is given (default 0.65).
        seed: seeds the generator used when :meth:`clicks` gets no ``rng`` (default 0).
    """

    name = "trust-bias"

    def __init__(
        self,
        examination: Sequence[float] | None = None,
        eta: float = 1.0,
        epsilon_relevant: Sequence[float] | None = None,
        epsilon_irrelevant: Sequence[float] | None = None,
        noise_top: float = 0.65,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        if eta < 0:
            raise ValueError("eta must be >= 0")
        self.examination = check_table("examination", examination)
        self.eta = float(eta)
        self.epsilon_relevant = check_table("epsilon_relevant", epsilon_relevant)
        self.epsilon_irrelevant = check_table("epsilon_irrelevant", epsilon_irrelevant)
        self.noise_top = check_probability("noise_top", noise_top)

    def examination_probability(self, rank: int) -> float:
        """θ(rank), rank 1-based."""
        if self.examination is not None:
            return rank_table_value(self.examination, rank)
        if rank < 1:
            raise ValueError("ranks are 1-based")
        return 1.0 / rank**self.eta

    def epsilon(self, rank: int, relevant: bool) -> float:
        """P(click | examined at rank, relevance): ε⁺(rank) or ε⁻(rank)."""
        if rank < 1:
            raise ValueError("ranks are 1-based")
        if relevant:
            if self.epsilon_relevant is not None:
                return rank_table_value(self.epsilon_relevant, rank)
            return 1.0 - (min(rank, 20) + 1) / 100
        if self.epsilon_irrelevant is not None:
            return rank_table_value(self.epsilon_irrelevant, rank)
        return self.noise_top / rank

    def click_probability(self, rank: int, relevant: bool) -> float:
        """θ(rank) · ε(rank, relevance)."""
        return self.examination_probability(rank) * self.epsilon(rank, relevant)

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
        return [bool(draw < self.click_probability(rank, bool(rel))) for rank, (draw, rel) in enumerate(zip(draws, relevance), start=1)]

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "examination": self.examination if self.examination is not None else f"1/rank^{self.eta:g}",
            "epsilon_relevant": self.epsilon_relevant if self.epsilon_relevant is not None else "1-(min(rank,20)+1)/100",
            "epsilon_irrelevant": self.epsilon_irrelevant if self.epsilon_irrelevant is not None else f"{self.noise_top:g}/rank",
        }
