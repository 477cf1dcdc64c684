"""Steps 3 and 4 of :class:`~finetuning.images.model_optimizer.ModelOptimizer`, the post-processing
that needs no training: choose the similarity metric and normalisation (the collection rebuilt in
the chosen Chroma space) and fit the confidence calibration.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from finetuning.images.calibration import SimilarityCalibrator, expected_calibration_error, uncalibrated_confidence
from finetuning.images.extractor import l2_normalize
from finetuning.images.model_optimizer_evaluation import OptimizerEvaluation
from finetuning.images.model_optimizer_settings import ImageData
from finetuning.images.searcher import METRIC_TO_SPACE, SPACE_TO_METRIC, confidences_for
from finetuning.images.similarity import similarity_matrix

logger = logging.getLogger("finetuning.images.model_optimizer")  # the optimizer's logger, whichever part logs


class OptimizerCalibration(OptimizerEvaluation):
    """``_evaluate_similarity_metric``, ``_optimize_similarity_metric``, ``_fit_calibration_curve``,
    ``_update_confidence_calculation``, ``_calibrate_confidence_scores``."""

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
