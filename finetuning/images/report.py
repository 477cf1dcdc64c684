"""The optimizer's report: ``report.json`` and ``report.png`` (accuracy before/after per
similarity metric; reliability diagram of raw vs calibrated confidence with the fitted curve)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from finetuning.images.calibration import SimilarityCalibrator


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(report, indent=2))
    return path


def write_png(report: dict[str, Any], calibrator: SimilarityCalibrator | None, scores: np.ndarray, path: Path,
              accuracy_keys: tuple[str, str] = ("test_top1_before", "test_top1_after"),
              accuracy_label: str = "held-out top-1 retrieval accuracy") -> Path:
    """Left: ``report[accuracy_keys[0]]`` vs ``[1]`` (metric → accuracy); right: the reliability
    diagram from ``report["calibration"]`` and the fitted curve over the range of ``scores``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    before_key, after_key = accuracy_keys
    metrics = list(report[before_key])
    x = np.arange(len(metrics))
    before = [report[before_key][m] for m in metrics]
    after = [report[after_key].get(m, np.nan) for m in metrics]
    left.bar(x - 0.2, before, 0.4, label="before")
    left.bar(x + 0.2, after, 0.4, label="after")
    left.set_xticks(x, [m + (" (chosen)" if m == report["chosen_metric"] else "") for m in metrics])
    left.set_ylim(np.nanmin(before + after) * 0.9, 1.0)
    left.set_ylabel(accuracy_label)
    left.set_title("Accuracy before / after optimization")
    left.legend()

    calibration = report["calibration"]
    right.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect")
    for key, style, name in (("bins_before", "o-", "raw"), ("bins_after", "s-", "calibrated")):
        bins = calibration[key]
        right.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style,
                   label=f"{name} (ECE {calibration['ece_before' if key == 'bins_before' else 'ece_after']:.3f})")
    if calibrator is not None and len(scores):
        grid = np.linspace(float(np.min(scores)), float(np.max(scores)), 200)
        curve = calibrator.confidences(grid)
        raw_range = (grid - grid.min()) / max(grid.max() - grid.min(), 1e-9)
        right.plot(raw_range, curve, ":", label=f"{calibration['method']} curve (x: similarity, rescaled)")
    right.set_xlabel("confidence")
    right.set_ylabel("accuracy")
    right.set_title(f"Calibration ({report['chosen_metric']})")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
