"""Step 2 of :class:`~finetuning.images.model_optimizer.ModelOptimizer`: contrastive fine-tuning of
the extractor's backbone with the shared Lightning loop, the checkpoint, and the collection rebuilt
from the training images with the fine-tuned model (the training images become the gallery).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from finetuning.images.backbone import ImageEmbeddingBackbone
from finetuning.images.losses import LOSSES
from finetuning.images.model_optimizer_evaluation import OptimizerEvaluation
from finetuning.images.model_optimizer_settings import ImageData
from finetuning.images.training import fine_tune_backbone


class OptimizerTraining(OptimizerEvaluation):
    """``_contrastive_loss``, ``_save_checkpoint``, ``_contrastive_fine_tuning``."""

    # --- step 2: contrastive fine-tuning ------------------------------------------------------
    def _contrastive_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The configured loss where labels define positives (SupCon, or batch-hard triplet)."""
        name = self.settings.loss_name
        if name == "supcon":
            return LOSSES["supcon"](embeddings, labels, temperature=self.settings.temperature)
        return LOSSES[name](embeddings, labels, margin=self.settings.margin)

    def _save_checkpoint(self, model: nn.Module, epoch: int, loss: float | None) -> Path:
        """Save ``model`` (a backbone: safetensors/HF layout, nothing pickled) to
        ``output_dir/checkpoints/epoch-{epoch}`` with ``checkpoint.json`` (epoch, loss, config)."""
        directory = self.output_dir / "checkpoints" / f"epoch-{epoch}"
        if not isinstance(model, ImageEmbeddingBackbone):
            raise TypeError("only image backbones (ImageEmbeddingBackbone) can be checkpointed")
        model.save(directory)
        (directory / "checkpoint.json").write_text(json.dumps(
            {"epoch": epoch, "loss": loss, "config": json.loads(self.settings.model_dump_json())}, indent=2))
        self._checkpoint_dir = directory
        return directory

    def _contrastive_fine_tuning(self, training_data: ImageData, validation_data: ImageData) -> dict[str, float]:
        """Fine-tune the extractor's backbone, save it, and rebuild the collection from the
        training images with it; returns the last epoch's loss and the best validation top-1."""
        train_records = self._records(training_data)
        self._seen_classes |= {record.object_class for record in train_records + self._records(validation_data)}
        mapping = self._build_class_mapping()
        train, val = self._labelled(train_records, mapping), self._labelled(validation_data, mapping)
        work_dir = self.output_dir / "lightning"
        shutil.rmtree(work_dir, ignore_errors=True)
        settings = self.settings
        tuned = fine_tune_backbone(
            self.extractor.backbone, train, val, work_dir / "checkpoints", epochs=settings.epochs,
            batch_size=settings.batch_size, learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
            loss=settings.loss_name, temperature=settings.temperature, margin=settings.margin,
            max_shift=settings.max_shift, seed=settings.seed, loss_fn=self._contrastive_loss,
            patience=settings.patience, min_delta=settings.min_improvement,
        )
        self.extractor.model = tuned.backbone
        saved = self._save_checkpoint(tuned.backbone, tuned.best_epoch or tuned.epochs_run, tuned.train_loss)
        self.extractor.model_path = saved
        vectors = self.extractor.extract_embeddings(train.images)
        self.searcher.rebuild([record.id for record in train_records], vectors,
                              [record.object_class for record in train_records], model_path=saved,
                              normalized=self.extractor.normalize)
        self._state_version += 1
        self._make_current()
        result = {"final_train_loss": tuned.train_loss if tuned.train_loss is not None else float("nan"),
                  "best_val_top1": tuned.best_val_top1 if tuned.best_val_top1 is not None else float("nan"),
                  "epochs_run": float(tuned.epochs_run), "best_epoch": float(tuned.best_epoch or tuned.epochs_run),
                  "gallery_size": float(len(train_records))}
        self.optimization_history.append({"step": "contrastive_fine_tuning", **result, "model_path": str(saved)})
        return result
