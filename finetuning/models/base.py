"""The contract every embedding model in clicktune fulfils.

A model has a query tower and an items tower (the same module when ``same_query_and_items``).
Training code only talks to this interface; saving writes a self-describing directory
(``clicktune_model.json`` with a ``kind`` plus weights in a library format such as a
sentence-transformers directory or a ``state_dict``) so a fresh process can load it with
:func:`finetuning.models.registry.load_model` without any of our classes being pickled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

MODEL_CONFIG_FILE = "clicktune_model.json"


class EmbeddingsModelInterface(nn.Module, ABC):
    """Query tower + items tower producing L2-comparable embeddings.

    Implementations must set ``kind`` (a registry key) and ``same_query_and_items``.
    ``forward_query``/``forward_items`` keep the autograd graph (used in training);
    ``encode_queries``/``encode_items`` run without gradients in eval mode, in batches.
    """

    kind: str = "abstract"
    same_query_and_items: bool = True

    # --- parameters and freezing -------------------------------------------------------
    @abstractmethod
    def get_query_model_params(self) -> Iterator[nn.Parameter]: ...

    @abstractmethod
    def get_items_model_params(self) -> Iterator[nn.Parameter]: ...

    @abstractmethod
    def fix_query_model(self, num_fixed_layers: int) -> None:
        """Freeze the embeddings and the first ``num_fixed_layers`` layers (``requires_grad_(False)``)."""

    @abstractmethod
    def unfix_query_model(self) -> None: ...

    @abstractmethod
    def fix_item_model(self, num_fixed_layers: int) -> None: ...

    @abstractmethod
    def unfix_item_model(self) -> None: ...

    # --- embedding --------------------------------------------------------------------
    @abstractmethod
    def forward_query(self, queries: list[str]) -> torch.Tensor:
        """Embed a batch of queries with gradients; shape (n, dim)."""

    @abstractmethod
    def forward_items(self, items: list[Any]) -> torch.Tensor:
        """Embed a batch of items (texts, PIL images …) with gradients; shape (n, dim)."""

    @torch.no_grad()
    def encode_queries(self, queries: list[str], batch_size: int = 64) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            parts = [self.forward_query(queries[i : i + batch_size]) for i in range(0, len(queries), batch_size)]
            return torch.cat(parts) if parts else torch.empty(0, self.get_embedding_dimension())
        finally:
            self.train(was_training)

    @torch.no_grad()
    def encode_items(self, items: list[Any], batch_size: int = 64) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            parts = [self.forward_items(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
            return torch.cat(parts) if parts else torch.empty(0, self.get_embedding_dimension())
        finally:
            self.train(was_training)

    @abstractmethod
    def get_embedding_dimension(self) -> int: ...

    # --- persistence ------------------------------------------------------------------
    @abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write the model to ``directory`` (created if needed) including ``MODEL_CONFIG_FILE``."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "EmbeddingsModelInterface":
        """Load a model written by :meth:`save`."""
