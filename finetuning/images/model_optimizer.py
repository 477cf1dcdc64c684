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
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from finetuning.images.backbone import ImageEmbeddingBackbone
from finetuning.images.calibration import (
    CalibrationMethod,
    SimilarityCalibrator,
    expected_calibration_error,
    reliability_bins,
    uncalibrated_confidence,
)
from finetuning.images.data import ClassMapping, IRImageDataset, LabelledImage, LabelledImages
from finetuning.images.extractor import EmbeddingExtractor, l2_normalize
from finetuning.images.losses import LOSSES
from finetuning.images.report import write_json, write_png
from finetuning.images.searcher import (
    METRIC_TO_SPACE,
    SPACE_TO_METRIC,
    SimilarityResult,
    SimilaritySearcher,
    confidences_for,
    distances_to_similarities,
    results_from_chroma,
)
from finetuning.images.similarity import similarity_matrix
from finetuning.images.training import fine_tune_backbone

logger = logging.getLogger(__name__)

ImageData = Sequence[LabelledImage] | IRImageDataset | LabelledImages | None
REPORT_JSON = "optimization_report.json"
REPORT_PNG = "optimization_report.png"


def _default_metrics_to_test() -> list[dict[str, Any]]:
    return [{"metric": "cosine", "normalization": True}, {"metric": "euclidean", "normalization": True},
            {"metric": "euclidean", "normalization": False}, {"metric": "dot", "normalization": False}]


class ModelOptimizerSettings(BaseModel):
    """The optimizer's configuration (``config`` dict keys). Accepted for the users' existing
    configs but not used: ``similarity_target`` / ``confidence_target`` are reported as met or
    not; ``scheduler_step_size`` / ``scheduler_gamma`` (the learning rate follows a cosine
    schedule). ``use_triplet_loss`` selects the batch-hard triplet loss unless ``loss`` is given.
    ``patience`` / ``min_improvement``: early stopping on validation top-1 accuracy. Unknown keys
    are kept in ``config`` and logged as ignored."""

    model_config = ConfigDict(extra="allow")

    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, gt=1)
    epochs: int = Field(10, gt=0)
    patience: int | None = Field(10, ge=1)
    min_improvement: float = Field(0.0, ge=0)
    use_contrastive_loss: bool = True
    use_triplet_loss: bool = False
    loss: Literal["supcon", "batch_hard_triplet"] | None = None
    margin: float = Field(0.2, gt=0)
    temperature: float = Field(0.1, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_shift: int = Field(1, ge=0)
    similarity_target: float = 0.8
    confidence_target: float = 0.75
    scheduler_step_size: int = 20
    scheduler_gamma: float = 0.5
    metrics_to_test: list[dict[str, Any]] = Field(default_factory=_default_metrics_to_test)
    calibration: CalibrationMethod = "logistic"
    calibration_top_k: int = Field(5, ge=1)
    search_k: int = Field(5, ge=1)
    ece_bins: int = Field(10, ge=2)
    output_dir: Path = Path("model_optimization")
    seed: int = 0

    @property
    def loss_name(self) -> str:
        return self.loss or ("batch_hard_triplet" if self.use_triplet_loss else "supcon")


class ModelOptimizer:
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

    # --- data -------------------------------------------------------------------------------
    def _records(self, data: ImageData) -> list[LabelledImage]:
        if isinstance(data, LabelledImages):
            return data.records()
        if isinstance(data, IRImageDataset):
            return list(data.images)
        return list(data or [])

    def _build_class_mapping(self) -> dict[str, int]:
        """Class name → index over the classes in the collection and in the data seen so far."""
        _, _, stored = self.searcher.labelled_embeddings()
        return ClassMapping.from_labels(sorted(set(stored) | self._seen_classes)).to_dict()

    def _labelled(self, data: ImageData, mapping: dict[str, int]) -> LabelledImages:
        return IRImageDataset(self._records(data), class_to_idx=mapping).to_labelled_images()

    def _queries(self, data: ImageData, normalize: bool | None = None) -> tuple[np.ndarray, list[str], list[str]]:
        """Embeddings, classes and ids of ``data``'s images; ``None``: the stored gallery itself
        (leave-one-out: a query's own entry is excluded from its hits)."""
        normalize = self.extractor.normalize if normalize is None else normalize
        if data is None:  # read afresh: the collection may change outside this optimizer
            ids, vectors, classes = self.searcher.labelled_embeddings()
            return (l2_normalize(vectors) if normalize else vectors), classes, ids
        key = (id(data), self._state_version, normalize)
        cached = self._embedding_cache.get(key)
        if cached is None or cached[0] is not data:  # the identity check guards against a reused id()
            records = self._records(data)
            self._seen_classes |= {record.object_class for record in records}
            was = self.extractor.normalize
            self.extractor.normalize = normalize
            try:
                vectors = self.extractor.extract_embeddings([record.image_data for record in records])
            finally:
                self.extractor.normalize = was
            ids, classes = [record.id for record in records], [record.object_class for record in records]
            self._embedding_cache[key] = (data, vectors, classes, ids)
        return self._embedding_cache[key][1:]  # type: ignore[return-value]

    def _search(self, data: ImageData, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Top-``k`` hits of ``data`` in the collection: similarities ``(n, k')``, correctness
        ``(n, k')`` and the query classes (``k'`` ≤ k when the collection is smaller)."""
        vectors, classes, ids = self._queries(data)
        leave_one_out = data is None
        answer = self.searcher.query(vectors, k + 1 if leave_one_out else k)
        similarities, correct = [], []
        space = self.searcher.space
        for row, (hit_ids, distances, metadatas) in enumerate(zip(answer["ids"], answer["distances"], answer["metadatas"])):
            keep = [j for j, hit in enumerate(hit_ids) if not (leave_one_out and hit == ids[row])][:k]
            similarities.append(distances_to_similarities([distances[j] for j in keep], space))
            correct.append([str((metadatas[j] or {}).get("object_class")) == classes[row] for j in keep])
        width = min(len(row) for row in similarities) if similarities else 0
        return (np.array([row[:width] for row in similarities]).reshape(len(similarities), width),
                np.array([row[:width] for row in correct], dtype=np.float64).reshape(len(correct), width), classes)

    # --- evaluation ---------------------------------------------------------------------------
    def _evaluate_current_performance(self, validation_data: ImageData) -> dict[str, float]:
        """Search ``validation_data`` (``None``: the gallery, leave-one-out) in the collection:
        ``accuracy`` (top-1), ``top_k_accuracy``, mean/max similarity and confidence of the top-k
        hits, and ``ece`` of the top-1 confidence (``ece_uncalibrated``: the uncalibrated reading
        of the same similarities)."""
        k = self.settings.search_k
        similarities, correct, _ = self._search(validation_data, k)
        if similarities.size == 0:
            return {"accuracy": 0.0, "top_k_accuracy": 0.0, "avg_similarity": 0.0, "max_similarity": 0.0,
                    "avg_confidence": 0.0, "max_confidence": 0.0, "ece": float("nan"), "ece_uncalibrated": float("nan"),
                    "queries": 0.0}
        space = self.searcher.space
        confidences = confidences_for(similarities, space, self.searcher.calibrator)
        raw = uncalibrated_confidence(similarities, space)
        bins = self.settings.ece_bins
        self._last_evaluation = {"top1_similarity": similarities[:, 0], "top1_correct": correct[:, 0],
                                 "top1_confidence": confidences[:, 0], "top1_uncalibrated": raw[:, 0]}
        return {
            "accuracy": float(correct[:, 0].mean()),
            "top_k_accuracy": float(correct.max(axis=1).mean()),
            "avg_similarity": float(similarities.mean()), "max_similarity": float(similarities.max()),
            "avg_confidence": float(confidences.mean()), "max_confidence": float(confidences.max()),
            "ece": expected_calibration_error(confidences[:, 0], correct[:, 0], bins),
            "ece_uncalibrated": expected_calibration_error(raw[:, 0], correct[:, 0], bins),
            "queries": float(len(correct)),
        }

    def evaluate(self, test_data: ImageData) -> dict[str, float]:
        """:meth:`_evaluate_current_performance` on images no choice was made on; kept for the report."""
        result = self._evaluate_current_performance(test_data)
        self.optimization_history.append({"step": "evaluate", **result})
        self._held_out = {**result, **{key: value.tolist() for key, value in self._last_evaluation.items()}}
        return result

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

    # --- step 3: similarity metric ------------------------------------------------------------
    def _evaluate_similarity_metric(self, validation_data: ImageData, metric_config: dict[str, Any]) -> dict[str, float]:
        """Top-1 accuracy (and mean/std of the top-1 similarity) of ``validation_data`` against the
        stored gallery with ``metric_config`` (``metric``: cosine | dot | euclidean,
        ``normalization``: L2-normalise queries and gallery); exact scores, no index."""
        normalize = bool(metric_config.get("normalization", False))
        metric = {"inner_product": "dot", "ip": "dot", "l2": "euclidean"}.get(metric_config["metric"], metric_config["metric"])
        queries, query_classes, query_ids = self._queries(validation_data, normalize=normalize)
        ids, gallery, gallery_classes = self.searcher.labelled_embeddings()
        gallery = l2_normalize(gallery) if normalize else gallery
        scores = similarity_matrix(torch.from_numpy(queries), torch.from_numpy(gallery), metric).numpy()
        if validation_data is None:  # leave-one-out over the gallery
            position = {entry: index for index, entry in enumerate(ids)}
            for row, query_id in enumerate(query_ids):
                scores[row, position[query_id]] = -np.inf
        best = scores.argmax(axis=1)
        top = scores[np.arange(len(best)), best]
        accuracy = float(np.mean([gallery_classes[j] == query_classes[i] for i, j in enumerate(best)])) if len(best) else 0.0
        return {"top1_accuracy": accuracy, "avg_similarity": float(np.mean(top)) if len(top) else 0.0,
                "std_similarity": float(np.std(top)) if len(top) else 0.0}

    def _optimize_similarity_metric(self, validation_data: ImageData) -> dict[str, Any]:
        """Score every ``metrics_to_test`` entry; apply the best (validation top-1 accuracy; ties
        go to the earlier entry) by rebuilding the collection in its space when it differs."""
        results = []
        for metric_config in self.settings.metrics_to_test:
            results.append({**metric_config, **self._evaluate_similarity_metric(validation_data, metric_config)})
        best = max(results, key=lambda item: (item["top1_accuracy"], -results.index(item)))
        metric = {"inner_product": "dot", "ip": "dot", "l2": "euclidean"}.get(best["metric"], best["metric"])
        space, normalize = METRIC_TO_SPACE[metric], bool(best.get("normalization", False))
        before = {"space": self.searcher.space, "normalization": self.extractor.normalize or self.searcher.normalized}
        changed = before != {"space": space, "normalization": normalize}
        if changed:
            ids, vectors, classes = self.searcher.labelled_embeddings()
            self.searcher.rebuild(ids, l2_normalize(vectors) if normalize else vectors, classes, space=space,
                                  normalized=normalize)
            self.extractor.normalize = normalize
            self._state_version += 1
            self._make_current()
        outcome = {"best_metric": {"metric": metric, "normalization": normalize}, "best_similarity_score": best["avg_similarity"],
                   "best_top1_accuracy": best["top1_accuracy"], "results": results, "changed": changed,
                   "previous": {"metric": SPACE_TO_METRIC[before["space"]], "normalization": before["normalization"]}}
        self.optimization_history.append({"step": "optimize_similarity_metric", **outcome})
        return outcome

    # --- step 4: confidence calibration -------------------------------------------------------
    def _fit_calibration_curve(self, similarities: Sequence[float], accuracies: Sequence[float], *,
                               ranks: Sequence[int] | None = None, totals: Sequence[int] | None = None) -> dict[str, Any]:
        """Fit similarity (+ rank context when ``ranks``/``totals`` are given, 1-based) → probability
        of the right class; returns the curve's parameters (JSON-ready, ``space`` included)."""
        similarities = np.asarray(similarities, dtype=np.float64)
        ranks_array = np.ones_like(similarities) if ranks is None else np.asarray(ranks, dtype=np.float64)
        totals_array = np.ones_like(similarities) if totals is None else np.asarray(totals, dtype=np.float64)
        calibrator = SimilarityCalibrator.fit(similarities, ranks_array, totals_array, np.asarray(accuracies, dtype=np.float64),
                                              self.settings.calibration, SPACE_TO_METRIC[self.searcher.space])
        return {**calibrator.to_dict(), "space": self.searcher.space}

    def _update_confidence_calculation(self, calibration_params: dict[str, Any]) -> None:
        """Use the fitted curve for every confidence from now on: in the searcher (stored with the
        collection) and in the static :meth:`improved_confidence_calculation`."""
        calibrator = SimilarityCalibrator.from_dict(calibration_params)
        self.searcher.set_calibration(calibrator)
        self._make_current()

    def _calibrate_confidence_scores(self, validation_data: ImageData) -> dict[str, float]:
        """Fit the calibration on the top ``calibration_top_k`` hits of ``validation_data``."""
        k = self.settings.calibration_top_k
        similarities, correct, _ = self._search(validation_data, k)
        if correct.size < 5:
            logger.warning("too few validation hits to calibrate (%d)", correct.size)
            return {}
        n, width = similarities.shape
        ranks = np.tile(np.arange(1, width + 1), (n, 1))
        params = self._fit_calibration_curve(similarities.reshape(-1), correct.reshape(-1), ranks=ranks.reshape(-1),
                                             totals=np.full(n * width, width))
        space = self.searcher.space
        before = uncalibrated_confidence(similarities, space)
        self._update_confidence_calculation(params)
        after = confidences_for(similarities, space, self.searcher.calibrator)
        bins = self.settings.ece_bins
        result = {"fitted_points": float(correct.size),
                  "ece_before": expected_calibration_error(before.reshape(-1), correct.reshape(-1), bins),
                  "ece_after_in_sample": expected_calibration_error(after.reshape(-1), correct.reshape(-1), bins)}
        self.optimization_history.append({"step": "calibrate_confidence_scores", **result,
                                          "method": params["method"], "params": params["params"]})
        return result

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

    # --- report -------------------------------------------------------------------------------
    def generate_optimization_report(self) -> dict[str, Any]:
        """The report (settings, history, baseline/final/held-out figures, chosen metric,
        calibration with reliability bins); written to ``output_dir/optimization_report.json``
        and ``optimization_report.png``."""
        bins = self.settings.ece_bins
        baseline, final, held_out = self._baseline, self._final, self._held_out
        space = self.searcher.space
        if not held_out and not self._last_evaluation:  # nothing evaluated yet: the gallery, leave-one-out
            self._evaluate_current_performance(None)
        points = held_out or {key: value.tolist() for key, value in self._last_evaluation.items()}
        calibration: dict[str, Any] = {"method": self.searcher.calibrator.method if self.searcher.calibrator else None,
                                       "evaluated_on": "held-out images" if held_out else "validation images"}
        if points:
            correct = np.asarray(points["top1_correct"])
            raw, calibrated = np.asarray(points["top1_uncalibrated"]), np.asarray(points["top1_confidence"])
            calibration.update(ece_before=expected_calibration_error(raw, correct, bins),
                               ece_after=expected_calibration_error(calibrated, correct, bins),
                               bins_before=reliability_bins(raw, correct, bins), bins_after=reliability_bins(calibrated, correct, bins))
        metric_step = next((step for step in reversed(self.optimization_history) if step["step"] == "optimize_similarity_metric"), None)
        targets = {"similarity_target": self.settings.similarity_target, "confidence_target": self.settings.confidence_target}
        if final:
            targets.update(similarity_met=final["avg_similarity"] >= self.settings.similarity_target,
                           confidence_met=final["avg_confidence"] >= self.settings.confidence_target)
        report: dict[str, Any] = {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": json.loads(self.settings.model_dump_json()),
            "collection": {"name": self.searcher.collection_name, "space": space, "entries": self.searcher.count(),
                           "normalized_embeddings": self.searcher.normalized, "model_path": self.searcher.model_path},
            "chosen_metric": SPACE_TO_METRIC[space],
            "metric_results": metric_step["results"] if metric_step else [],
            "baseline": baseline, "final": final, "held_out": {k: v for k, v in (held_out or {}).items() if not isinstance(v, list)},
            "accuracy_before": {"top-1": baseline.get("accuracy", float("nan")), "top-k": baseline.get("top_k_accuracy", float("nan"))},
            "accuracy_after": {"top-1": final.get("accuracy", float("nan")), "top-k": final.get("top_k_accuracy", float("nan"))},
            "calibration": calibration, "targets": targets, "best_metrics": self.best_metrics,
            "optimization_history": self.optimization_history,
            "model_path": str(self._checkpoint_dir) if self._checkpoint_dir else self.searcher.model_path,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(report, self.output_dir / REPORT_JSON)
        if "bins_before" in calibration:
            similarities = np.asarray(points["top1_similarity"])
            write_png(report, self.searcher.calibrator, similarities, self.output_dir / REPORT_PNG,
                      accuracy_keys=("accuracy_before", "accuracy_after"), accuracy_label="validation retrieval accuracy")
        return report

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
