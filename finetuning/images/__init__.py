"""Adapting an image embedding backbone to a labelled image set: contrastive fine-tuning, choice
of similarity metric, confidence calibration, report. See :mod:`finetuning.images.optimizer`."""

from finetuning.images.backbone import HFClipVisionBackbone, ImageEmbeddingBackbone, SmallCNN, TimmBackbone, load_backbone
from finetuning.images.calibration import SimilarityCalibrator, expected_calibration_error
from finetuning.images.data import ClassMapping, LabelledImages, load_digits_dataset, load_image_folder, stratified_split
from finetuning.images.optimizer import ImageOptimizationResult, ImageOptimizerConfig, OptimizedImageModel, optimize_images

__all__ = [
    "ClassMapping", "HFClipVisionBackbone", "ImageEmbeddingBackbone", "ImageOptimizationResult", "ImageOptimizerConfig",
    "LabelledImages", "OptimizedImageModel", "SimilarityCalibrator", "SmallCNN", "TimmBackbone",
    "expected_calibration_error", "load_backbone", "load_digits_dataset", "load_image_folder", "optimize_images",
    "stratified_split",
]
