"""Optimize an image embedding backbone for a labelled image set.

:func:`optimize_images`, top to bottom:

1. stratified split into train (also the retrieval gallery), validation and test;
2. measure held-out top-1 retrieval accuracy of the given backbone for every similarity metric;
3. contrastive fine-tuning (:func:`finetuning.images.training.fine_tune_backbone`; labels define
   positives), checkpoints under
   ``output_dir/checkpoints`` (the best by validation top-1 and ``last.ckpt``; a rerun resumes
   from ``last.ckpt`` when the settings are unchanged); the best checkpoint is kept;
4. measure again; choose the metric with the best *validation* accuracy;
5. fit a calibrator on validation retrievals (similarity → correctness) and measure the expected
   calibration error on the *test* retrievals before (raw score) and after calibration;
6. write ``model/`` (the optimized backbone, same layout as the input), ``class_mapping.json``,
   ``calibration.json`` (metric + curve), ``report.json`` and ``report.png``.

:class:`OptimizedImageModel` loads that directory back and exposes
``confidence(similarity, rank, total)``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from finetuning.images.backbone import ImageEmbeddingBackbone, load_backbone
from finetuning.images.calibration import (
    CalibrationMethod,
    SimilarityCalibrator,
    expected_calibration_error,
    raw_confidence,
    reliability_bins,
)
from finetuning.images.data import ClassMapping, LabelledImages, stratified_split
from finetuning.images.training import fine_tune_backbone
from finetuning.images.report import write_json, write_png
from finetuning.images.similarity import METRICS, choose_metric, retrieve, top1_accuracy_by_metric

MetricName = Literal["cosine", "dot", "euclidean"]
RUN_CONFIG_FILE = "run_config.json"


class ImageOptimizerConfig(BaseModel):
    """Settings of one optimization. Defaults suit small images on CPU (the digits demo)."""

    model_config = ConfigDict(extra="forbid")

    backbone_dir: Path
    output_dir: Path
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["supcon", "batch_hard_triplet"] = "supcon"
    temperature: float = Field(0.1, gt=0)
    margin: float = Field(0.2, gt=0)
    max_shift: int = Field(1, ge=0, description="random translation augmentation, pixels of the stored image")
    metrics: list[MetricName] = Field(default_factory=lambda: list(METRICS))
    calibration: CalibrationMethod = "logistic"
    calibration_top_k: int = Field(1, ge=1)
    ece_bins: int = Field(10, ge=2)
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 0
    resume: bool = True

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"output_dir", "resume"})


@dataclass
class ImageOptimizationResult:
    output_dir: Path
    report: dict[str, Any]
    stopped: bool = False


def _accuracies(backbone: ImageEmbeddingBackbone, splits: Any, metrics: list[str]) -> tuple[dict[str, float], dict[str, float], dict[str, torch.Tensor]]:
    embedded = {name: backbone.encode(getattr(splits, name).images) for name in ("train", "val", "test")}
    gallery, gallery_labels = embedded["train"], splits.train.labels
    val = top1_accuracy_by_metric(embedded["val"], splits.val.labels, gallery, gallery_labels, metrics)
    test = top1_accuracy_by_metric(embedded["test"], splits.test.labels, gallery, gallery_labels, metrics)
    return val, test, embedded


def _calibration_data(embedded: dict[str, torch.Tensor], splits: Any, split: str, metric: str, k: int) -> tuple[np.ndarray, ...]:
    result = retrieve(embedded[split], getattr(splits, split).labels, embedded["train"], splits.train.labels, metric, k=k)
    ranks = np.tile(np.arange(1, result.scores.shape[1] + 1), (result.scores.shape[0], 1))
    return (result.scores.numpy().reshape(-1), ranks.reshape(-1),
            np.full(ranks.size, result.total), result.correct.numpy().reshape(-1).astype(np.float64))


def _prepare_checkpoints(config: ImageOptimizerConfig) -> Path | None:
    """``last.ckpt`` to resume from, or None after clearing checkpoints of other settings."""
    checkpoints = config.output_dir / "checkpoints"
    run_config = config.output_dir / RUN_CONFIG_FILE
    same = run_config.exists() and json.loads(run_config.read_text()) == config.fingerprint()
    last = checkpoints / "last.ckpt"
    if config.resume and same and last.exists():
        return last
    shutil.rmtree(checkpoints, ignore_errors=True)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    run_config.write_text(json.dumps(config.fingerprint(), indent=2))
    return None


def optimize_images(
    config: ImageOptimizerConfig,
    data: LabelledImages,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImageOptimizationResult:
    """Run the optimization described in the module docstring; see :class:`ImageOptimizerConfig`."""
    started = time.monotonic()
    metrics = list(config.metrics)
    splits = stratified_split(data, config.val_fraction, config.test_fraction, config.seed)
    resume_from = _prepare_checkpoints(config)

    backbone = load_backbone(config.backbone_dir)
    val_before, test_before, _ = _accuracies(backbone, splits, metrics)
    if on_progress:
        on_progress({"stage": "measured_before", "fraction": 0.0, "test_top1_before": test_before})

    tuned = fine_tune_backbone(
        backbone, splits.train, splits.val, config.output_dir / "checkpoints", epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate, weight_decay=config.weight_decay,
        loss=config.loss, temperature=config.temperature, margin=config.margin, max_shift=config.max_shift,
        seed=config.seed, resume_from=resume_from, log_dir=config.output_dir, on_progress=on_progress,
        should_stop=should_stop,
    )
    if tuned.stopped:
        return ImageOptimizationResult(config.output_dir, {"stopped_at_epoch": tuned.epochs_run}, stopped=True)
    backbone, best_path = tuned.backbone, tuned.best_checkpoint
    val_after, test_after, embedded = _accuracies(backbone, splits, metrics)
    chosen = choose_metric(val_after)

    fit_scores, fit_ranks, fit_totals, fit_correct = _calibration_data(embedded, splits, "val", chosen, config.calibration_top_k)
    calibrator = SimilarityCalibrator.fit(fit_scores, fit_ranks, fit_totals, fit_correct, config.calibration, chosen)
    test_scores, _, test_totals, test_correct = _calibration_data(embedded, splits, "test", chosen, 1)
    conf_before = raw_confidence(test_scores, chosen)
    conf_after = calibrator.confidences(test_scores, 1, test_totals)

    out = config.output_dir
    backbone.save(out / "model")
    data.classes.save(out / "class_mapping.json")
    (out / "calibration.json").write_text(json.dumps(calibrator.to_dict(), indent=2))
    report: dict[str, Any] = {
        "backbone_dir": str(config.backbone_dir), "backbone_kind": backbone.kind, "model_dir": str(out / "model"),
        "classes": data.classes.to_dict(),
        "sizes": {"train_gallery": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "settings": config.model_dump(mode="json"),
        "val_top1_before": val_before, "val_top1_after": val_after,
        "test_top1_before": test_before, "test_top1_after": test_after,
        "chosen_metric": chosen,
        "test_top1_before_chosen": test_before[chosen], "test_top1_after_chosen": test_after[chosen],
        "calibration": {
            "method": config.calibration, "fitted_on": f"validation top-{config.calibration_top_k}",
            "ece_before": expected_calibration_error(conf_before, test_correct, config.ece_bins),
            "ece_after": expected_calibration_error(conf_after, test_correct, config.ece_bins),
            "bins_before": reliability_bins(conf_before, test_correct, config.ece_bins),
            "bins_after": reliability_bins(conf_after, test_correct, config.ece_bins),
        },
        "best_checkpoint": best_path, "epochs_run": tuned.epochs_run,
        "resumed_from": str(resume_from) if resume_from else None,
        "duration_seconds": time.monotonic() - started,
    }
    write_json(report, out / "report.json")
    write_png(report, calibrator, fit_scores, out / "report.png")
    if on_progress:
        on_progress({"stage": "done", "fraction": 1.0, "best_metric": test_after[chosen]})
    return ImageOptimizationResult(out, report)


class OptimizedImageModel:
    """An optimizer output directory loaded back: backbone, chosen metric, calibrator, classes."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.backbone = load_backbone(directory / "model")
        self.calibrator = SimilarityCalibrator.from_dict(json.loads((directory / "calibration.json").read_text()))
        self.metric = self.calibrator.metric
        self.classes = ClassMapping.load(directory / "class_mapping.json")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(images)

    def confidence(self, similarity: float, rank: int = 1, total: int = 1) -> float:
        return self.calibrator.confidence(similarity, rank, total)
