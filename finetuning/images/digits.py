"""The digits demo: a small CNN backbone pre-trained briefly, to be optimized on all classes.

``build_pretrained_digits_backbone(directory)`` trains a :class:`SmallCNN` for a few epochs as a
classifier on *some* of the digit classes only (a linear head on the embedding, discarded
afterwards), and saves it — a backbone that embeds digits usefully but was never shown the
remaining classes: the realistic starting point of "adapt a generic model to my labels".
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from finetuning.images.backbone import SmallCNN
from finetuning.images.data import LabelledImages, load_digits_dataset


def pretrain_classifier(backbone: SmallCNN, data: LabelledImages, epochs: int = 2, batch_size: int = 64,
                        learning_rate: float = 2e-3, seed: int = 0) -> SmallCNN:
    """Plain-torch classification pre-training on ``data`` (labels re-indexed to the classes present)."""
    torch.manual_seed(seed)
    present = sorted(set(data.labels.tolist()))
    remap = {label: index for index, label in enumerate(present)}
    targets = torch.tensor([remap[label] for label in data.labels.tolist()])
    head = nn.Linear(backbone.embedding_dim, len(present))
    optimizer = torch.optim.Adam(list(backbone.parameters()) + list(head.parameters()), lr=learning_rate)
    backbone.train()
    for _ in range(epochs):
        order = torch.randperm(len(targets))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(head(backbone(data.images[index])), targets[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    backbone.eval()
    return backbone


def build_pretrained_digits_backbone(directory: str | Path, classes: tuple[str, ...] = ("0", "1", "2", "3", "4"),
                                     epochs: int = 2, seed: int = 0, dim: int = 64) -> Path:
    """Pre-train a SmallCNN on ``classes`` of load_digits and save it to ``directory``."""
    torch.manual_seed(seed)
    data = load_digits_dataset().only_classes(list(classes))
    backbone = SmallCNN(in_channels=1, image_size=16, width=16, dim=dim)
    pretrain_classifier(backbone, data, epochs=epochs, seed=seed)
    return backbone.save(directory)
