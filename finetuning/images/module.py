"""The Lightning module that fine-tunes an image backbone contrastively.

A training step reads top to bottom: images and labels in → embeddings → supervised contrastive
(or batch-hard triplet) loss → optimizer step. Each validation epoch embeds the gallery (the
training images) and the validation images and logs ``val_top1`` — top-1 retrieval accuracy
with cosine similarity — which the checkpoint callback monitors to keep the best weights.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch

from finetuning.images.backbone import ImageEmbeddingBackbone
from finetuning.images.losses import LOSSES
from finetuning.images.similarity import retrieve

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def augment(images: torch.Tensor, max_shift: int = 1) -> torch.Tensor:
    """A random translation of up to ``max_shift`` pixels per image (cheap, label-preserving)."""
    if max_shift <= 0:
        return images
    padded = torch.nn.functional.pad(images, [max_shift] * 4)
    h, w = images.shape[-2:]
    out = torch.empty_like(images)
    shifts = torch.randint(0, 2 * max_shift + 1, (images.shape[0], 2))
    for i, (dy, dx) in enumerate(shifts.tolist()):
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


class ContrastiveImageModule(L.LightningModule):
    def __init__(
        self,
        backbone: ImageEmbeddingBackbone,
        gallery_images: torch.Tensor,
        gallery_labels: torch.Tensor,
        loss: str = "supcon",
        temperature: float = 0.1,
        margin: float = 0.2,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        max_shift: int = 1,
        loss_fn: LossFn | None = None,
    ) -> None:
        """``loss_fn(embeddings, labels)``, when given, replaces the named loss (a caller's own
        contrastive loss, e.g. ``ModelOptimizer._contrastive_loss``)."""
        super().__init__()
        self.loss_fn = loss_fn
        self.backbone = backbone
        self.gallery_images, self.gallery_labels = gallery_images, gallery_labels
        self.loss_name, self.temperature, self.margin = loss, temperature, margin
        self.learning_rate, self.weight_decay, self.max_shift = learning_rate, weight_decay, max_shift
        self._val_embeddings: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def _loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is not None:
            return self.loss_fn(embeddings, labels)
        if self.loss_name == "supcon":
            return LOSSES["supcon"](embeddings, labels, temperature=self.temperature)
        return LOSSES[self.loss_name](embeddings, labels, margin=self.margin)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        embeddings = self.backbone(augment(images, self.max_shift))
        loss = self._loss(embeddings, labels)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self._val_embeddings.append(self.backbone(images).float().cpu())
        self._val_labels.append(labels.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_embeddings:
            return
        gallery = self.backbone.encode(self.gallery_images)
        result = retrieve(torch.cat(self._val_embeddings), torch.cat(self._val_labels), gallery, self.gallery_labels, "cosine")
        self.log("val_top1", result.top1_accuracy(), prog_bar=True)
        self._val_embeddings.clear()
        self._val_labels.clear()

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.backbone.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        max_epochs = max(int(self.trainer.max_epochs or 1), 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class ProgressAndCancel(L.Callback):
    """Reports ``{"stage", "epoch", "fraction", "val_top1"}`` after each epoch and stops training
    cleanly after the current batch when ``should_stop()`` is true."""

    def __init__(self, on_progress: Callable[[dict[str, Any]], None] | None, should_stop: Callable[[], bool] | None) -> None:
        self.on_progress, self.should_stop = on_progress, should_stop
        self.stopped = False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.should_stop is not None and self.should_stop():
            self.stopped = True
            trainer.should_stop = True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_progress is None or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val_top1")
        self.on_progress({"stage": "training", "epoch": trainer.current_epoch + 1,
                          "fraction": (trainer.current_epoch + 1) / max(trainer.max_epochs or 1, 1),
                          "val_top1": float(value) if value is not None else None})
