"""Text embedding model over sentence-transformers, with a shared or a separate items tower.

``TextEmbeddingsModel`` wraps one :class:`~sentence_transformers.SentenceTransformer` (the query
tower) and, when ``same_query_and_items`` is False, a deep copy of it as the items tower, so
queries and documents can drift apart during fine-tuning.

Freezing is real: ``fix_query_model(n)`` calls ``requires_grad_(False)`` on the word embeddings
and the first ``n`` transformer layers of the underlying Hugging Face model, and
:meth:`get_query_model_params` only yields parameters that still train.

On disk (:meth:`save`) the query tower is a plain sentence-transformers directory (so any tool can
load it), the items tower, if separate, lives in the ``items/`` sub-directory, and
``clicktune_model.json`` says ``{"kind": "text", "same_query_and_items": ..., ...}``.

    >>> model = TextEmbeddingsModel.from_pretrained(base_model_path("all-MiniLM-L6-v2"))  # doctest: +SKIP
    >>> model.encode_queries(["what causes rain"]).shape                                   # doctest: +SKIP
    torch.Size([1, 384])
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from finetuning.models.base import MODEL_CONFIG_FILE, EmbeddingsModelInterface

ITEMS_SUBDIR = "items"


def _load_sentence_transformer(path: str | Path, device: str | None = None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device or "cpu", local_files_only=True)


def transformer_layers(hf_model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a Hugging Face encoder (BERT, RoBERTa, DistilBERT, MPNet, ...)."""
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer", "text_model.encoder.layers"):
        module: Any = hf_model
        for name in path.split("."):
            module = getattr(module, name, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"cannot find the transformer layers of {type(hf_model).__name__}")


def freeze_layers(hf_model: nn.Module, num_fixed_layers: int) -> None:
    """``requires_grad_(False)`` on the input embeddings and the first ``num_fixed_layers`` blocks."""
    if num_fixed_layers < 0:
        raise ValueError("num_fixed_layers must be >= 0")
    layers = transformer_layers(hf_model)
    if num_fixed_layers > len(layers):
        raise ValueError(f"cannot fix {num_fixed_layers} layers of a model with {len(layers)}")
    hf_model.requires_grad_(True)
    if num_fixed_layers == 0:
        return
    embeddings = getattr(hf_model, "embeddings", None)
    if embeddings is None and hasattr(hf_model, "get_input_embeddings"):
        embeddings = hf_model.get_input_embeddings()
    if embeddings is not None:
        embeddings.requires_grad_(False)
    for layer in layers[:num_fixed_layers]:
        layer.requires_grad_(False)


class TextEmbeddingsModel(EmbeddingsModelInterface):
    """Sentence-transformers text towers. ``items_model`` is ``None`` when shared with the query tower."""

    kind = "text"

    def __init__(self, query_model: nn.Module, items_model: nn.Module | None = None) -> None:
        super().__init__()
        self.query_model = query_model
        self._items_model = items_model
        self.same_query_and_items = items_model is None

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_dir: str | Path,
        same_query_and_items: bool = True,
        device: str | None = None,
        max_seq_length: int | None = None,
    ) -> "TextEmbeddingsModel":
        """Load a sentence-transformers directory (or one of ours); separate towers = a deep copy."""
        path = Path(path_or_dir)
        if (path / MODEL_CONFIG_FILE).exists():
            model = cls.load(path, device=device)
            query_model, items_model = model.query_model, model._items_model
        else:
            query_model, items_model = _load_sentence_transformer(path, device), None
        if same_query_and_items:
            items_model = None
        elif items_model is None:
            items_model = copy.deepcopy(query_model)
        if max_seq_length is not None:
            for tower in (query_model, items_model):
                if tower is not None:
                    tower.max_seq_length = max_seq_length
        return cls(query_model, items_model)

    @property
    def items_model(self) -> nn.Module:
        return self.query_model if self._items_model is None else self._items_model

    # --- parameters and freezing -------------------------------------------------------
    def get_query_model_params(self) -> Iterator[nn.Parameter]:
        """Trainable parameters of the query tower (frozen ones are left out)."""
        return (p for p in self.query_model.parameters() if p.requires_grad)

    def get_items_model_params(self) -> Iterator[nn.Parameter]:
        """Trainable parameters of the items tower; empty when shared with the query tower."""
        if self._items_model is None:
            return iter(())
        return (p for p in self._items_model.parameters() if p.requires_grad)

    def fix_query_model(self, num_fixed_layers: int) -> None:
        freeze_layers(self.query_model.transformers_model, num_fixed_layers)

    def unfix_query_model(self) -> None:
        self.query_model.requires_grad_(True)

    def fix_item_model(self, num_fixed_layers: int) -> None:
        freeze_layers(self.items_model.transformers_model, num_fixed_layers)

    def unfix_item_model(self) -> None:
        self.items_model.requires_grad_(True)

    # --- embedding --------------------------------------------------------------------
    @staticmethod
    def _embed(tower: nn.Module, texts: list[str]) -> torch.Tensor:
        if not texts:
            dim = tower.get_embedding_dimension()
            return torch.empty(0, dim, device=next(tower.parameters()).device)
        features = tower.preprocess(list(texts))
        device = next(tower.parameters()).device
        features = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        return tower(features)["sentence_embedding"]

    def forward_query(self, queries: list[str]) -> torch.Tensor:
        return self._embed(self.query_model, queries)

    def forward_items(self, items: list[Any]) -> torch.Tensor:
        return self._embed(self.items_model, [str(item) for item in items])

    @torch.no_grad()
    def encode_items(self, items: list[Any], batch_size: int = 64) -> torch.Tensor:
        """As the base class, but texts are batched by length (less padding); output order kept."""
        if not items:
            return super().encode_items(items, batch_size)
        order = sorted(range(len(items)), key=lambda i: len(str(items[i])))
        encoded = super().encode_items([items[i] for i in order], batch_size)
        out = torch.empty_like(encoded)
        out[torch.tensor(order, device=encoded.device)] = encoded
        return out

    def get_embedding_dimension(self) -> int:
        return int(self.query_model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int | None:
        return self.query_model.max_seq_length

    # --- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.query_model.save(str(directory), create_model_card=False)
        if self._items_model is not None:
            self._items_model.save(str(directory / ITEMS_SUBDIR), create_model_card=False)
        self.write_config(directory)
        return directory

    def write_config(self, directory: str | Path) -> Path:
        """Write ``clicktune_model.json`` into ``directory`` (e.g. next to a tower saved by another tool)."""
        config = {
            "kind": self.kind,
            "format": "sentence-transformers",
            "same_query_and_items": self.same_query_and_items,
            "items_subdir": None if self.same_query_and_items else ITEMS_SUBDIR,
            "embedding_dimension": self.get_embedding_dimension(),
        }
        path = Path(directory) / MODEL_CONFIG_FILE
        path.write_text(json.dumps(config, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "TextEmbeddingsModel":
        directory = Path(directory)
        config = json.loads((directory / MODEL_CONFIG_FILE).read_text())
        if config.get("kind") != cls.kind:
            raise ValueError(f"{directory} holds a {config.get('kind')!r} model, not {cls.kind!r}")
        query_model = _load_sentence_transformer(directory, device)
        items_model = None
        if not config.get("same_query_and_items", True):
            items_model = _load_sentence_transformer(directory / (config.get("items_subdir") or ITEMS_SUBDIR), device)
        return cls(query_model, items_model)
