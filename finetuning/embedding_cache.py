"""Embeddings of the current weights, each distinct query and item computed once.

Validation scores held-out sessions: the loss and pair gap per validation batch and the
retrieval metrics over the pool of every shown result. All of them read the same embeddings, so
:class:`EmbeddingsCache` computes each distinct query text and item once per set of weights
(under ``torch.inference_mode``, in batches) and hands out rows. The cache empties itself when
the weights change: every in-place change of a parameter (an optimizer step, ``load_state_dict``)
bumps the tensor's version counter, and the cache compares those counters on each use. Until
then nothing is re-embedded, e.g. the start model's embeddings serve every validation run
before the first step. Embeddings are computed at full precision even inside a mixed-precision
training run (autocast off), so the start model and every candidate are scored with the same
numerics.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

import torch

from finetuning.models.base import EmbeddingsModelInterface


class EmbeddingsCache:
    def __init__(self, model: EmbeddingsModelInterface, batch_size: int = 64) -> None:
        self.model = model
        self.batch_size = batch_size
        self.computed = 0  # texts embedded since construction (queries + items), for tests and benches
        self.clear()

    def clear(self) -> None:
        """Forget every embedding."""
        self._queries: dict[Any, torch.Tensor] = {}
        self._items: dict[str, torch.Tensor] = {}
        self._items_set: Mapping[str, Any] | None = None
        self._weights = self._weights_stamp()

    def _weights_stamp(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.model.parameters())

    def _check_weights(self) -> None:
        if self._weights_stamp() != self._weights:
            self.clear()

    def queries(self, texts: Sequence[Any]) -> torch.Tensor:
        """(len(texts), d) rows for query texts (retrieved query values)."""
        self._check_weights()
        missing = list(dict.fromkeys(t for t in texts if t not in self._queries))
        if missing:
            with self._full_precision():
                rows = self.model.encode_queries(missing, batch_size=self.batch_size)
            self._queries.update(zip(missing, rows))
            self.computed += len(missing)
        return self._stack([self._queries[t] for t in texts])

    def items(self, ids: Sequence[str], items_set: Mapping[str, Any]) -> torch.Tensor:
        """(len(ids), d) rows for item ids whose contents ``items_set`` holds."""
        self._check_weights()
        if items_set is not self._items_set:  # another split's contents: other embeddings
            self._items, self._items_set = {}, items_set
        missing = list(dict.fromkeys(i for i in ids if i not in self._items))
        if missing:
            contents = items_set.rows(missing) if hasattr(items_set, "rows") else [items_set[i] for i in missing]
            with self._full_precision():
                rows = self.model.encode_items(contents, batch_size=self.batch_size)
            self._items.update(zip(missing, rows))
            self.computed += len(missing)
        return self._stack([self._items[i] for i in ids])

    def _full_precision(self) -> contextlib.ExitStack:
        device = next(iter(self.model.parameters()), torch.empty(0)).device
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        return stack

    def _stack(self, rows: list[torch.Tensor]) -> torch.Tensor:
        if rows:
            return torch.stack(rows)
        device = next(iter(self.model.parameters())).device
        return torch.zeros(0, self.model.get_embedding_dimension(), device=device)

    def __len__(self) -> int:
        return len(self._queries) + len(self._items)
