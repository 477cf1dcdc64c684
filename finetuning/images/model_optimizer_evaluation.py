"""Data and evaluation of :class:`~finetuning.images.model_optimizer.ModelOptimizer`: image data →
embeddings (cached per model state), top-k search in the collection, and the evaluation of steps
1 and 5 (accuracy, similarity, confidence, ECE). The base of the optimizer's other parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finetuning.images.calibration import expected_calibration_error, uncalibrated_confidence
from finetuning.images.data import ClassMapping, IRImageDataset, LabelledImage, LabelledImages
from finetuning.images.extractor import EmbeddingExtractor, l2_normalize
from finetuning.images.model_optimizer_settings import ImageData, ModelOptimizerSettings
from finetuning.images.searcher import SimilaritySearcher, confidences_for, distances_to_similarities


class OptimizerEvaluation:
    """The state every part of the optimizer shares (set by ``ModelOptimizer.__init__``) and the
    data / search / evaluation methods."""

    extractor: EmbeddingExtractor
    searcher: SimilaritySearcher
    settings: ModelOptimizerSettings
    optimization_history: list[dict[str, Any]]
    _seen_classes: set[str]
    _embedding_cache: dict[tuple[int, int, bool], tuple[Any, np.ndarray, list[str], list[str]]]
    _state_version: int
    _last_evaluation: dict[str, Any]
    _checkpoint_dir: Path | None
    _held_out: dict[str, Any] | None

    if TYPE_CHECKING:  # provided by ModelOptimizer
        def _make_current(self) -> None: ...

        @property
        def output_dir(self) -> Path: ...

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
