"""Embedding models: the shared interface, the text and CLIP implementations, the kind registry."""

from finetuning.models.base import MODEL_CONFIG_FILE, EmbeddingsModelInterface

__all__ = ["MODEL_CONFIG_FILE", "EmbeddingsModelInterface"]
