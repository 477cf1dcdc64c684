"""The labelled-image optimizer's class interface on scikit-learn's digits, end to end (CPU, ~1 min).

    PYTHONPATH=. python examples/image_optimizer_digits.py [work_dir]

1. a small CNN pre-trained briefly on digits 0–4 only (the "generic model" to adapt);
2. the training digits embedded into a persistent Chroma collection (the labelled gallery);
3. ``ModelOptimizer.create_optimizer`` → ``optimize_similarity_scores`` → ``evaluate`` on test
   digits no step has seen → ``generate_optimization_report`` (JSON + PNG in work_dir/report).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from finetuning.images import EmbeddingExtractor, ModelOptimizer, SimilaritySearcher, load_digits_dataset, stratified_split
from finetuning.images.digits import build_pretrained_digits_backbone


def main(work_dir: Path) -> dict:
    backbone_dir = build_pretrained_digits_backbone(work_dir / "backbone", epochs=2, seed=0)
    splits = stratified_split(load_digits_dataset(), val_fraction=0.2, test_fraction=0.2, seed=0)
    training_data = splits.train.records("train")  # LabelledImage(id, image_data, object_class)
    validation_data, test_data = splits.val.records("val"), splits.test.records("test")

    extractor = EmbeddingExtractor()
    extractor.load_model(backbone_dir)
    SimilaritySearcher.build(work_dir / "chroma_db", extractor, training_data, collection_name="ir_embeddings")

    optimizer = ModelOptimizer.create_optimizer(str(work_dir / "chroma_db"), model_path=str(backbone_dir),
                                                config={"epochs": 10, "output_dir": str(work_dir / "report")})
    before = optimizer.evaluate(test_data)
    improvements = optimizer.optimize_similarity_scores(training_data, validation_data)
    after = optimizer.evaluate(test_data)
    report = optimizer.generate_optimization_report()

    query = optimizer.extractor.extract_embedding(test_data[0].image_data)
    hits, _ = optimizer.searcher.search_similar(query, k=3)
    summary = {
        "test_top1": [before["accuracy"], after["accuracy"]],
        "test_ece_uncalibrated_vs_calibrated": [after["ece_uncalibrated"], after["ece"]],
        "chosen": improvements["best_metric"],
        "first_test_digit": test_data[0].object_class,
        "its_hits": [(hit.object_class, round(hit.similarity_score, 3), round(hit.confidence, 3)) for hit in hits],
        "report": str(Path(report["config"]["output_dir"]) / "optimization_report.json"),
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="digits-optimizer-")))
