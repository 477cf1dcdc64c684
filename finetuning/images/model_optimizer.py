"""``ModelOptimizer``: the labelled-image optimizer with the class interface its users know.

    optimizer = ModelOptimizer.create_optimizer("data/chroma_db", model_path="weights/")  # or ModelOptimizer(extractor, searcher)
    metrics = optimizer.optimize_similarity_scores(training_data, validation_data)
    report = optimizer.generate_optimization_report()    # dict; also writes JSON + PNG

The roles: an :class:`~finetuning.images.extractor.EmbeddingExtractor` (any image backbone) and a
:class:`~finetuning.images.searcher.SimilaritySearcher` (a Chroma collection of labelled
embeddings: the gallery). ``training_data`` / ``validation_data`` are lists of
:class:`~finetuning.images.data.LabelledImage` (``IRImage``), an ``IRImageDataset`` or a
``LabelledImages`` set.

``optimize_similarity_scores`` runs, top to bottom:

1. ``_evaluate_current_performance(validation_data)`` — the baseline: validation images searched
   in the collection (top-1 / top-k accuracy, mean similarity and confidence, ECE);
2. ``_contrastive_fine_tuning`` — the shared Lightning loop
   (:func:`finetuning.images.training.fine_tune_backbone`) with ``_contrastive_loss``; the best
   epoch is saved by ``_save_checkpoint`` and the collection is **rebuilt from the training
   images** with the fine-tuned model (embeddings of the old model are not comparable with the
   new model's queries): the training images are the gallery;
3. ``_optimize_similarity_metric`` — each ``metrics_to_test`` entry (metric + normalisation) is
   scored by ``_evaluate_similarity_metric`` (validation top-1 accuracy); the best is applied by
   rebuilding the collection in that Chroma space (``cosine`` / ``ip`` / ``l2``) with stored and
   query embeddings normalised or not;
4. ``_calibrate_confidence_scores`` — validation top-k hits → ``_fit_calibration_curve``
   (:class:`~finetuning.images.calibration.SimilarityCalibrator`, logistic on similarity and rank
   by default) → ``_update_confidence_calculation`` (the searcher uses it and stores it in the
   collection's metadata; the static :meth:`ModelOptimizer.improved_confidence_calculation` uses it);
5. the final evaluation; the returned dict has the improvements and both evaluations' figures.

``apply_quick_fixes()`` runs steps 3–4 (no training), by default on the gallery itself
(leave-one-out: each stored embedding queried against the others), and says what it changed.

**Static methods and state.** ``improved_confidence_calculation``,
``improved_similarity_conversion`` and ``normalized_extract_embedding`` are static, as
documented, so they read class-level state: the extractor, the collection's space and the
calibration of the *most recently* constructed or updated optimizer (``ModelOptimizer.current``).
With no calibration fitted the confidence is the uncalibrated reading of the similarity.
``rank`` is 0-based there, as the searcher enumerates its hits.

Choices are made on validation data; a claim about them needs images neither step saw
(``evaluate(test_data)``).

Modules: the steps live in mixins of :class:`ModelOptimizer` — ``model_optimizer_evaluation.py``
(data, search, steps 1 and 5), ``model_optimizer_training.py`` (step 2),
``model_optimizer_calibration.py`` (steps 3–4), ``model_optimizer_report.py`` (the report);
``model_optimizer_settings.py`` holds the configuration. This module holds the class state, the
pipelines and the static methods.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from finetuning.images.calibration import SimilarityCalibrator, uncalibrated_confidence
from finetuning.images.extractor import EmbeddingExtractor, l2_normalize
from finetuning.images.model_optimizer_calibration import OptimizerCalibration
from finetuning.images.model_optimizer_report import REPORT_JSON, REPORT_PNG, OptimizerReport
from finetuning.images.model_optimizer_settings import ImageData, ModelOptimizerSettings
from finetuning.images.model_optimizer_training import OptimizerTraining
from finetuning.images.searcher import SimilarityResult, SimilaritySearcher, results_from_chroma

__all__ = ["REPORT_JSON", "REPORT_PNG", "ImageData", "ModelOptimizer", "ModelOptimizerSettings"]

logger = logging.getLogger(__name__)


class ModelOptimizer(OptimizerTraining, OptimizerCalibration, OptimizerReport):
    """Fine-tune, choose the similarity metric and calibrate confidences of an image search."""

    current: ClassVar["ModelOptimizer | None"] = None
    _current_extractor: ClassVar[EmbeddingExtractor | None] = None
    _current_space: ClassVar[str | None] = None
    _current_calibration: ClassVar[SimilarityCalibrator | None] = None

    def __init__(self, extractor: EmbeddingExtractor, searcher: SimilaritySearcher,
                 config: dict[str, Any] | None = None) -> None:
        self.extractor = extractor
        self.searcher = searcher
        if not searcher.is_initialized:
            searcher.initialize()
        self.config: dict[str, Any] = {**self._default_config(), **(config or {})}
        self.settings = ModelOptimizerSettings.model_validate(self.config)
        if self.settings.model_extra:
            logger.warning("ignored optimizer config keys: %s", sorted(self.settings.model_extra))
        self.optimization_history: list[dict[str, Any]] = []
        self.best_metrics: dict[str, float] = {}
        self._seen_classes: set[str] = set()
        self._embedding_cache: dict[tuple[int, int, bool], tuple[Any, np.ndarray, list[str], list[str]]] = {}
        self._state_version = 0  # bumped when the model or the stored gallery changes
        self._last_evaluation: dict[str, Any] = {}
        self._checkpoint_dir: Path | None = None
        self._baseline: dict[str, float] = {}
        self._final: dict[str, float] = {}
        self._held_out: dict[str, Any] | None = None
        self._make_current()

    # --- class-level state for the static methods -----------------------------------------
    def _make_current(self) -> None:
        """Publish this optimizer's extractor, space and calibration to the static methods."""
        ModelOptimizer.current = self
        ModelOptimizer._current_extractor = self.extractor
        ModelOptimizer._current_space = self.searcher.space
        ModelOptimizer._current_calibration = self.searcher.calibrator

    def _default_config(self) -> dict[str, Any]:
        """The defaults of every config key (see :class:`ModelOptimizerSettings`)."""
        return ModelOptimizerSettings().model_dump()

    @property
    def output_dir(self) -> Path:
        return Path(self.settings.output_dir)

    # --- the pipelines ------------------------------------------------------------------------
    def optimize_similarity_scores(self, training_data: ImageData, validation_data: ImageData) -> dict[str, Any]:
        """Steps 1–5 of the module docstring; returns the improvements (final − baseline:
        ``similarity_improvement``, ``confidence_improvement``, ``accuracy_improvement``,
        ``ece_improvement``) plus ``baseline`` and ``final`` evaluations and ``best_metric``."""
        started = time.monotonic()
        baseline = self._evaluate_current_performance(validation_data)
        self.optimization_history.append({"step": "baseline", **baseline})
        fine_tuning: dict[str, float] = {}
        if self.settings.use_contrastive_loss:
            fine_tuning = self._contrastive_fine_tuning(training_data, validation_data)
        metric = self._optimize_similarity_metric(validation_data)
        calibration = self._calibrate_confidence_scores(validation_data)
        final = self._evaluate_current_performance(validation_data)
        self.optimization_history.append({"step": "final", **final})
        self.best_metrics = {key: value for key, value in final.items() if isinstance(value, float)}
        self._baseline, self._final = baseline, final
        return {
            "similarity_improvement": final["avg_similarity"] - baseline["avg_similarity"],
            "confidence_improvement": final["avg_confidence"] - baseline["avg_confidence"],
            "accuracy_improvement": final["accuracy"] - baseline["accuracy"],
            "ece_improvement": baseline["ece"] - final["ece"],
            "baseline": baseline, "final": final, "fine_tuning": fine_tuning,
            "best_metric": metric["best_metric"], "calibration": calibration,
            "duration_seconds": time.monotonic() - started,
        }

    def apply_quick_fixes(self, validation_data: ImageData = None) -> dict[str, Any]:
        """Post-processing that needs no training: the best metric and embedding normalisation
        (the collection rebuilt when they change) and a fitted confidence calibration. Uses
        ``validation_data`` when given, else the gallery itself (leave-one-out). Returns what
        changed, with accuracy and ECE before/after on the same queries."""
        before = self._evaluate_current_performance(validation_data)
        metric = self._optimize_similarity_metric(validation_data)
        calibration = self._calibrate_confidence_scores(validation_data)
        after = self._evaluate_current_performance(validation_data)
        previous, best = metric["previous"], metric["best_metric"]
        fixes: dict[str, Any] = {
            "embedding_normalization": (
                f"{'enabled' if best['normalization'] else 'disabled'} L2 normalisation"
                if best["normalization"] != previous["normalization"] else f"unchanged ({'on' if best['normalization'] else 'off'})"),
            "similarity_metric": (f"{previous['metric']} → {best['metric']}" if best["metric"] != previous["metric"]
                                  else f"unchanged ({best['metric']})"),
            "confidence_calibration": (f"{self.settings.calibration} curve fitted on {int(calibration['fitted_points'])} "
                                       f"hits ({'gallery leave-one-out' if validation_data is None else 'validation images'})"
                                       if calibration else "not fitted (too few hits)"),
            "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
            "ece_before": before["ece"], "ece_after": after["ece"],
        }
        self.optimization_history.append({"step": "apply_quick_fixes", **fixes})
        self._baseline, self._final = before, after
        return fixes

    # --- static methods -----------------------------------------------------------------------
    @staticmethod
    def create_optimizer(database_path: str, model_path: str | None = None, collection_name: str = "ir_embeddings",
                         config: dict[str, Any] | None = None) -> "ModelOptimizer":
        """Open the persistent Chroma database at ``database_path`` and its collection; load the
        backbone from ``model_path``, else from the path recorded in the collection."""
        searcher = SimilaritySearcher(database_path, collection_name)
        searcher.initialize()
        path = model_path or searcher.model_path
        if path is None:
            raise ValueError(f"collection {collection_name!r} records no model_path: pass model_path")
        extractor = EmbeddingExtractor(normalize=searcher.normalized)
        extractor.load_model(path)
        return ModelOptimizer(extractor, searcher, config)

    @staticmethod
    def improved_confidence_calculation(similarity_score: float, rank: int, total_results: int) -> float:
        """Confidence that the hit at 0-based ``rank`` of ``total_results`` with this similarity
        has the query's class: the current fitted calibration, else the uncalibrated reading."""
        calibrator = ModelOptimizer._current_calibration
        if calibrator is None:
            return float(uncalibrated_confidence(np.array([similarity_score]), ModelOptimizer._current_space or "cosine")[0])
        return calibrator.confidence(similarity_score, rank + 1, max(total_results, rank + 1))

    @staticmethod
    def improved_similarity_conversion(chroma_results: Any) -> list[SimilarityResult]:
        """Chroma ``query`` results → the first query's hits with similarities (by the current
        collection's space; a ``"space"`` key in ``chroma_results`` wins) and calibrated confidences."""
        space = chroma_results.get("space") or ModelOptimizer._current_space or "l2"
        converted = results_from_chroma(chroma_results, space, ModelOptimizer._current_calibration)
        return converted[0] if converted else []

    @staticmethod
    def normalized_extract_embedding(image: Any) -> np.ndarray:
        """The current extractor's embedding of ``image``, L2-normalised."""
        extractor = ModelOptimizer._current_extractor
        if extractor is None:
            raise RuntimeError("no ModelOptimizer has been created yet")
        return l2_normalize(extractor.extract_embedding(image)[None, :])[0]
