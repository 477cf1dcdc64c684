"""Adapting an image embedding backbone to a labelled image set: contrastive fine-tuning, choice
of similarity metric, confidence calibration, report.

Two entry points over the same parts: :func:`optimize_images` (a labelled set in, an output
directory out; see :mod:`finetuning.images.optimizer`) and :class:`ModelOptimizer` (the class
interface over an :class:`EmbeddingExtractor` and a Chroma-backed :class:`SimilaritySearcher`;
see :mod:`finetuning.images.model_optimizer`).
"""

from finetuning.images.backbone import HFClipVisionBackbone, ImageEmbeddingBackbone, SmallCNN, TimmBackbone, load_backbone
from finetuning.images.calibration import SimilarityCalibrator, expected_calibration_error
from finetuning.images.data import (
    ClassMapping,
    IRImage,
    IRImageDataset,
    LabelledImage,
    LabelledImages,
    load_digits_dataset,
    load_image_folder,
    stratified_split,
)
from finetuning.images.extractor import EmbeddingExtractor
from finetuning.images.model_optimizer import ModelOptimizer
from finetuning.images.optimizer import ImageOptimizationResult, ImageOptimizerConfig, OptimizedImageModel, optimize_images
from finetuning.images.searcher import SearchConfig, SimilarityResult, SimilaritySearcher

__all__ = [
    "ClassMapping", "EmbeddingExtractor", "HFClipVisionBackbone", "IRImage", "IRImageDataset", "ImageEmbeddingBackbone",
    "ImageOptimizationResult", "ImageOptimizerConfig", "LabelledImage", "LabelledImages", "ModelOptimizer",
    "OptimizedImageModel", "SearchConfig", "SimilarityCalibrator", "SimilarityResult", "SimilaritySearcher", "SmallCNN",
    "TimmBackbone", "expected_calibration_error", "load_backbone", "load_digits_dataset", "load_image_folder",
    "optimize_images", "stratified_split",
]
