"""The extractor role of the labelled-image optimizer: any image backbone, image in → embedding out.

    extractor = EmbeddingExtractor()
    extractor.load_model("path/to/weights")        # ours, HF CLIP or timm layout (load_backbone)
    vector = extractor.extract_embedding(image)    # numpy (dim,), float32
    matrix = extractor.extract_embeddings(images)  # numpy (n, dim)

``normalize=True`` L2-normalises every embedding (what ``ModelOptimizer.apply_quick_fixes`` turns
on when it helps retrieval). The backbone is reachable as ``extractor.model`` for fine-tuning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from finetuning.images.backbone import ImageEmbeddingBackbone, load_backbone
from finetuning.images.data import image_tensor


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class EmbeddingExtractor:
    """Wraps an :class:`ImageEmbeddingBackbone` (given, or loaded by :meth:`load_model`)."""

    def __init__(self, model: ImageEmbeddingBackbone | None = None, normalize: bool = False,
                 model_path: str | Path | None = None, batch_size: int = 256) -> None:
        self.model = model
        self.normalize = normalize
        self.model_path = Path(model_path) if model_path is not None else None
        self.batch_size = batch_size

    def load_model(self, model_path: str | Path | None = None) -> ImageEmbeddingBackbone:
        """Load the backbone at ``model_path`` (any layout :func:`load_backbone` reads). Without a
        path the current model is kept; there is no built-in default (nothing is downloaded)."""
        if model_path is None:
            if self.model is None:
                raise ValueError("no model_path given and no model loaded: image weights are never downloaded")
            return self.model
        self.model = load_backbone(model_path)
        self.model_path = Path(model_path)
        return self.model

    @property
    def backbone(self) -> ImageEmbeddingBackbone:
        if self.model is None:
            raise RuntimeError("no model loaded: call load_model(path) or pass a backbone")
        return self.model

    @property
    def embedding_dim(self) -> int:
        return self.backbone.embedding_dim

    def extract_embeddings(self, images: Sequence[Any] | torch.Tensor) -> np.ndarray:
        """``(n, dim)`` float32 embeddings of a batch: a ``(n, C, H, W)`` tensor in [0, 1] or a
        sequence of single images (see :func:`finetuning.images.data.image_tensor`)."""
        batch = images if isinstance(images, torch.Tensor) and images.dim() == 4 else torch.stack(
            [image_tensor(image) for image in images]) if len(images) else torch.empty(0)
        if batch.numel() == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        vectors = self.backbone.encode(batch.float(), batch_size=self.batch_size).numpy().astype(np.float32)
        return l2_normalize(vectors) if self.normalize else vectors

    def extract_embedding(self, image: Any) -> np.ndarray:
        """The ``(dim,)`` embedding of one image (``(H, W)``, ``(C, H, W)`` or ``(H, W, C)``)."""
        return self.extract_embeddings([image])[0]
