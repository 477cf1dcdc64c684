"""CLIP-style text → image model: a text tower for queries, a vision tower for items.

``ClipEmbeddingsModel.from_pretrained(dir)`` reads any Hugging Face CLIP weights directory
(``CLIPModel`` weights + a tokenizer + an image processor config); nothing is downloaded.
Queries go through ``get_text_features`` and items (PIL images) through ``get_image_features``;
both are L2-normalised. The towers are always separate (``same_query_and_items = False``), so the
fine-tuner gives them two optimizers. Freezing uses ``requires_grad_(False)`` on each tower's
embeddings and first N encoder layers.

On disk: the Hugging Face directory (``save_pretrained`` of model, tokenizer and image
processor) plus ``clicktune_model.json`` ``{"kind": "clip"}``.
Tests build a tiny random one with :func:`finetuning.models.tiny.build_tiny_clip_model`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from finetuning.models.base import MODEL_CONFIG_FILE, EmbeddingsModelInterface
from finetuning.models.text import freeze_layers


def _features(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipEmbeddingsModel(EmbeddingsModelInterface):
    kind = "clip"
    same_query_and_items = False

    def __init__(self, clip_model: nn.Module, tokenizer: Any, image_processor: Any, max_text_length: int = 77) -> None:
        super().__init__()
        self.clip_model = clip_model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_text_length = max_text_length

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None) -> "ClipEmbeddingsModel":
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        directory = str(directory)
        model = CLIPModel.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
        max_length = min(getattr(model.config.text_config, "max_position_embeddings", 77), 77)
        return cls(model, tokenizer, processor, max_text_length=max_length).to(device or "cpu")

    # --- parameters and freezing -------------------------------------------------------
    def _query_modules(self) -> list[nn.Module]:
        return [self.clip_model.text_model, self.clip_model.text_projection]

    def _items_modules(self) -> list[nn.Module]:
        return [self.clip_model.vision_model, self.clip_model.visual_projection]

    def get_query_model_params(self) -> Iterator[nn.Parameter]:
        return (p for m in self._query_modules() for p in m.parameters() if p.requires_grad)

    def get_items_model_params(self) -> Iterator[nn.Parameter]:
        return (p for m in self._items_modules() for p in m.parameters() if p.requires_grad)

    def fix_query_model(self, num_fixed_layers: int) -> None:
        freeze_layers(self.clip_model.text_model, num_fixed_layers)

    def unfix_query_model(self) -> None:
        for module in self._query_modules():
            module.requires_grad_(True)

    def fix_item_model(self, num_fixed_layers: int) -> None:
        freeze_layers(self.clip_model.vision_model, num_fixed_layers)

    def unfix_item_model(self) -> None:
        for module in self._items_modules():
            module.requires_grad_(True)

    # --- embedding --------------------------------------------------------------------
    @property
    def _device(self) -> torch.device:
        return next(self.clip_model.parameters()).device

    def forward_query(self, queries: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(queries), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        tokens = {k: v.to(self._device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(_features(self.clip_model.get_text_features(**tokens)), dim=-1)

    def forward_items(self, items: list[Any]) -> torch.Tensor:
        images = [item.convert("RGB") if hasattr(item, "convert") else item for item in items]
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self._device)
        return F.normalize(_features(self.clip_model.get_image_features(pixel_values=pixels)), dim=-1)

    def get_embedding_dimension(self) -> int:
        return int(self.clip_model.config.projection_dim)

    # --- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.clip_model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(str(directory))
        config = {"kind": self.kind, "format": "huggingface-clip", "same_query_and_items": False,
                  "embedding_dimension": self.get_embedding_dimension(), "max_text_length": self.max_text_length}
        (directory / MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "ClipEmbeddingsModel":
        return cls.from_pretrained(directory, device=device)
