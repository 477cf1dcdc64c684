"""Contrastive fine-tuning of an image backbone with Lightning: the one training loop behind both
:func:`finetuning.images.optimizer.optimize_images` and
:meth:`finetuning.images.model_optimizer.ModelOptimizer._contrastive_fine_tuning`.

Labels define the positives (SupCon or batch-hard triplet, or a caller's ``loss_fn``); each
epoch logs ``val_top1`` (validation images retrieved among the training images, cosine) and
``ModelCheckpoint`` keeps the best epoch by it plus ``last.ckpt``, from which a rerun can
resume. The best weights are loaded back (``weights_only=True``: nothing is unpickled) before
returning. ``patience`` adds early stopping on ``val_top1``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from finetuning.images.backbone import ImageEmbeddingBackbone
from finetuning.images.data import LabelledImages
from finetuning.images.module import ContrastiveImageModule, LossFn, ProgressAndCancel


@dataclass
class FineTuneResult:
    backbone: ImageEmbeddingBackbone  # the best epoch's weights, on the CPU
    best_checkpoint: str
    epochs_run: int
    stopped: bool  # ``should_stop`` ended training early: the weights are not the best ones
    best_val_top1: float | None
    train_loss: float | None  # mean training loss of the last epoch
    best_epoch: int | None = None  # 1-based epoch of the kept weights


def fine_tune_backbone(
    backbone: ImageEmbeddingBackbone,
    train: LabelledImages,
    val: LabelledImages,
    checkpoint_dir: Path,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    loss: str = "supcon",
    temperature: float = 0.1,
    margin: float = 0.2,
    max_shift: int = 1,
    seed: int = 0,
    resume_from: Path | None = None,
    loss_fn: LossFn | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    log_dir: Path | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FineTuneResult:
    """Fine-tune ``backbone`` on ``train`` (also the retrieval gallery of ``val_top1``)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    L.seed_everything(seed, workers=True, verbose=False)
    module = ContrastiveImageModule(
        backbone, train.images, train.labels, loss=loss, temperature=temperature, margin=margin,
        learning_rate=learning_rate, weight_decay=weight_decay, max_shift=max_shift, loss_fn=loss_fn,
    )
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, filename="best-{epoch}-{val_top1:.4f}",
                                 monitor="val_top1", mode="max", save_top_k=1, save_last=True)
    progress = ProgressAndCancel(on_progress, should_stop)
    callbacks: list[Any] = [checkpoint, progress]
    if patience is not None:
        callbacks.append(EarlyStopping(monitor="val_top1", mode="max", patience=patience, min_delta=min_delta))
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="auto", devices=1, callbacks=callbacks,
        logger=CSVLogger(str(log_dir), name="logs") if log_dir is not None else False, enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(), num_sanity_val_steps=0, log_every_n_steps=5,
    )
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(TensorDataset(train.images, train.labels), batch_size=batch_size, shuffle=True,
                              drop_last=len(train) > batch_size, generator=generator)
    val_loader = DataLoader(TensorDataset(val.images, val.labels), batch_size=256)
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(resume_from) if resume_from else None)
    train_loss = trainer.callback_metrics.get("train_loss_epoch")
    if progress.stopped:
        return FineTuneResult(module.backbone.cpu(), "", trainer.current_epoch, True, None,
                              float(train_loss) if train_loss is not None else None)

    best_path = checkpoint.best_model_path or str(Path(checkpoint_dir) / "last.ckpt")
    state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    best = checkpoint.best_model_score
    epoch = re.search(r"epoch=(\d+)", Path(best_path).name)
    return FineTuneResult(module.backbone.cpu(), best_path, trainer.current_epoch, False,
                          float(best) if best is not None else None,
                          float(train_loss) if train_loss is not None else None,
                          int(epoch.group(1)) + 1 if epoch else trainer.current_epoch)
