"""How a session's stored query becomes model input.

``QueryRetriever`` is the seed's hook; :class:`TextQueryRetriever` handles text queries stored as a
string or a dict (``{"text": ...}`` / ``{"query": ...}``) and can augment queries while training.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any, Callable


class QueryRetriever(ABC):
    @abstractmethod
    def __call__(self, query: Any) -> Any:
        """The model input for ``query``."""


class TextQueryRetriever(QueryRetriever):
    """Text of a query; ``augment`` (e.g. :func:`finetuning.inputs.augmentation.augment_text`) is applied
    only when :attr:`training` is set (the fine-tuner toggles it)."""

    def __init__(self, augment: Callable[[str, random.Random], str] | None = None, seed: int = 0) -> None:
        self.augment = augment
        self.training = False
        self._rng = random.Random(seed)

    def __call__(self, query: Any) -> str:
        if isinstance(query, dict):
            text = query.get("text") or query.get("query") or query.get("search_query") or ""
        else:
            text = str(query)
        if self.training and self.augment is not None:
            text = self.augment(text, self._rng)
        return text
