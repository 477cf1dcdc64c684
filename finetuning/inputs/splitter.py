"""Train/test split of sessions that never puts the same query in both splits.

Sessions are grouped by their normalised query text; whole groups go to one side. Groups are
split separately for irrelevant-marked and ordinary sessions so both sides keep about the same
share of irrelevant sessions. Deterministic for a given ``random_state``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Callable, Sequence

from finetuning.inputs.input import FineTuningInput
from finetuning.inputs.query_retriever import TextQueryRetriever


def _normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


class TrainTestSplitter:
    """``splitter(inputs) -> (train, test)``; ``test_size`` is the share of query groups held out."""

    def __init__(
        self,
        test_size: float = 0.2,
        shuffle: bool = True,
        random_state: int | None = 42,
        query_key: Callable[[object], str] | None = None,
    ) -> None:
        if not 0 < test_size < 1:
            raise ValueError("test_size must be in (0, 1)")
        self.test_size = test_size
        self.shuffle = shuffle
        self.random_state = random_state
        retriever = TextQueryRetriever()
        self.query_key = query_key or (lambda query: _normalise(retriever(query)))

    def __call__(self, inputs: Sequence[FineTuningInput]) -> tuple[list[FineTuningInput], list[FineTuningInput]]:
        groups: dict[str, list[FineTuningInput]] = defaultdict(list)
        for item in inputs:
            groups[self.query_key(item.query)].append(item)
        # a query is "irrelevant" if most of its sessions were marked so; strata keep the balance
        strata: dict[bool, list[str]] = {True: [], False: []}
        for key, members in groups.items():
            strata[sum(m.is_irrelevant for m in members) * 2 > len(members)].append(key)
        rng = random.Random(self.random_state)
        test_keys: set[str] = set()
        for keys in strata.values():
            keys = sorted(keys)
            if self.shuffle:
                rng.shuffle(keys)
            n_test = round(len(keys) * self.test_size)
            if len(keys) >= 2:
                n_test = min(max(n_test, 1), len(keys) - 1)
            test_keys.update(keys[:n_test])
        train = [i for i in inputs if self.query_key(i.query) not in test_keys]
        test = [i for i in inputs if self.query_key(i.query) in test_keys]
        return train, test
