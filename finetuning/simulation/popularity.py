"""Query popularity: how many search sessions each query gets in a simulated click log.

- :class:`UniformPopularity`: every query the same number of sessions (the simulator's
  ``sessions_per_query``).
- :class:`ZipfPopularity`: a long tail. Search logs follow Zipf's law — a few head queries are
  issued very often and most queries rarely (Silverstein, Henzinger, Marais & Moricz, "Analysis
  of a very large web search engine query log", SIGIR Forum 1999; Baeza-Yates et al., "The impact
  of caching on search engines", SIGIR 2007). Under a rank-frequency Zipf law the number of
  sessions ``n`` of a query follows a discrete power law, ``P(n) ∝ n ** -exponent``; here it is
  truncated at ``max_sessions``. The share of queries seen once is ``1 / H`` with
  ``H = Σ_{n=1}^{max_sessions} n ** -exponent``; with the defaults (exponent 1.5, at most 100
  sessions) **41.4 %** of queries are seen once, 73 % at most five times, and the mean is 7.7
  sessions per query (:meth:`ZipfPopularity.share_seen_once`, :meth:`ZipfPopularity.mean_sessions`).

Each query's count is drawn from a generator keyed by ``(seed, query id)``: it does not depend
on which other queries are simulated, and the same seed gives the same log.

    >>> ZipfPopularity().share_seen_once()                                      # doctest: +ELLIPSIS
    0.41...
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np


class QueryPopularity:
    """Sessions per query: :meth:`sessions` for one query id under a simulation seed."""

    name = "popularity"

    def sessions(self, query_id: str, seed: int = 0) -> int:
        raise NotImplementedError

    def share_seen_once(self) -> float:
        """Expected share of queries with exactly one session."""
        raise NotImplementedError

    def mean_sessions(self) -> float:
        """Expected sessions per query."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        raise NotImplementedError


class UniformPopularity(QueryPopularity):
    """Every query gets ``sessions_per_query`` sessions.

    Args:
        sessions_per_query: sessions of every query (default 10).
    """

    name = "uniform"

    def __init__(self, sessions_per_query: int = 10) -> None:
        if sessions_per_query < 1:
            raise ValueError("sessions_per_query must be >= 1")
        self.sessions_per_query = int(sessions_per_query)

    def sessions(self, query_id: str, seed: int = 0) -> int:
        return self.sessions_per_query

    def share_seen_once(self) -> float:
        return 1.0 if self.sessions_per_query == 1 else 0.0

    def mean_sessions(self) -> float:
        return float(self.sessions_per_query)

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "sessions_per_query": self.sessions_per_query}


class ZipfPopularity(QueryPopularity):
    """Sessions per query from a power law truncated at ``max_sessions`` (a Zipf-law query log).

    Args:
        exponent: ``P(n) ∝ n ** -exponent`` (default 1.5, i.e. a rank-frequency Zipf exponent of
            2); larger exponents make the tail heavier in rare queries.
        max_sessions: the most sessions a query can get (default 100).
    """

    name = "zipf"

    def __init__(self, exponent: float = 1.5, max_sessions: int = 100) -> None:
        if exponent <= 0:
            raise ValueError("exponent must be > 0")
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.exponent = float(exponent)
        self.max_sessions = int(max_sessions)
        counts = np.arange(1, self.max_sessions + 1, dtype=float)
        weights = counts**-self.exponent
        self._probabilities = weights / weights.sum()
        self._cdf = np.cumsum(self._probabilities)
        self._mean = float((counts * self._probabilities).sum())

    def sessions(self, query_id: str, seed: int = 0) -> int:
        rng = np.random.default_rng([seed, zlib.crc32(query_id.encode("utf-8")), 0x21BF])
        index = int(np.searchsorted(self._cdf, rng.random() * self._cdf[-1], side="right"))
        return min(index, self.max_sessions - 1) + 1

    def share_seen_once(self) -> float:
        return float(self._probabilities[0])

    def mean_sessions(self) -> float:
        return self._mean

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "exponent": self.exponent, "max_sessions": self.max_sessions}
