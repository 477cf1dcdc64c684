"""The report of :class:`~finetuning.images.model_optimizer.ModelOptimizer`: settings, history,
baseline / final / held-out figures, the chosen metric and the calibration with reliability bins,
written as ``optimization_report.json`` and ``optimization_report.png``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from finetuning.images.calibration import expected_calibration_error, reliability_bins
from finetuning.images.model_optimizer_evaluation import OptimizerEvaluation
from finetuning.images.report import write_json, write_png
from finetuning.images.searcher import SPACE_TO_METRIC

REPORT_JSON = "optimization_report.json"
REPORT_PNG = "optimization_report.png"


class OptimizerReport(OptimizerEvaluation):
    """``generate_optimization_report``."""

    best_metrics: dict[str, float]
    _baseline: dict[str, float]
    _final: dict[str, float]

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
