"""The labelled-image optimizer through its documented class interface: ``ModelOptimizer`` over an
``EmbeddingExtractor`` and a Chroma-backed ``SimilaritySearcher`` (embedded and server), on
scikit-learn's real digits; plus the documented names and signatures."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finetuning.images import (
    EmbeddingExtractor,
    IRImage,
    IRImageDataset,
    LabelledImage,
    ModelOptimizer,
    SimilaritySearcher,
    SmallCNN,
    load_digits_dataset,
    stratified_split,
)
from finetuning.images.calibration import expected_calibration_error
from finetuning.images.data import image_tensor
from finetuning.images.digits import pretrain_classifier
from finetuning.images.searcher import collection_space, distances_to_similarities

DOCUMENTED_METHODS = {
    "optimize_similarity_scores": ["training_data", "validation_data"],
    "_contrastive_fine_tuning": ["training_data", "validation_data"],
    "_optimize_similarity_metric": ["validation_data"],
    "_evaluate_similarity_metric": ["validation_data", "metric_config"],
    "_calibrate_confidence_scores": ["validation_data"],
    "_fit_calibration_curve": ["similarities", "accuracies"],
    "_evaluate_current_performance": ["validation_data"],
    "_update_confidence_calculation": ["calibration_params"],
    "_build_class_mapping": [],
    "_contrastive_loss": ["embeddings", "labels"],
    "_save_checkpoint": ["model", "epoch", "loss"],
    "_default_config": [],
    "apply_quick_fixes": [],
    "generate_optimization_report": [],
}
DOCUMENTED_STATIC = {
    "create_optimizer": ["database_path", "model_path", "collection_name"],
    "improved_confidence_calculation": ["similarity_score", "rank", "total_results"],
    "improved_similarity_conversion": ["chroma_results"],
    "normalized_extract_embedding": ["image"],
}


def _required_then_optional(function, documented: list[str], skip_self: bool) -> None:
    parameters = list(inspect.signature(function).parameters.values())[1 if skip_self else 0:]
    assert [p.name for p in parameters[: len(documented)]] == documented, (function, parameters)
    for extra in parameters[len(documented):]:  # anything beyond the documented ones is optional
        assert extra.default is not inspect.Parameter.empty or extra.kind is inspect.Parameter.VAR_KEYWORD, extra


def test_every_documented_name_exists_with_its_documented_parameters() -> None:
    _required_then_optional(ModelOptimizer.__init__, ["extractor", "searcher", "config"], skip_self=True)
    assert inspect.signature(ModelOptimizer.__init__).parameters["config"].default is None
    for name, documented in DOCUMENTED_METHODS.items():
        member = inspect.getattr_static(ModelOptimizer, name)
        assert inspect.isfunction(member), name
        _required_then_optional(getattr(ModelOptimizer, name), documented, skip_self=True)
    for name, documented in DOCUMENTED_STATIC.items():
        assert isinstance(inspect.getattr_static(ModelOptimizer, name), staticmethod), name
        _required_then_optional(getattr(ModelOptimizer, name), documented, skip_self=False)
    create = inspect.signature(ModelOptimizer.create_optimizer).parameters
    assert create["model_path"].default is None and create["collection_name"].default == "ir_embeddings"
    _required_then_optional(IRImageDataset.__init__, ["images", "transform"], skip_self=True)
    assert inspect.signature(IRImageDataset.__init__).parameters["transform"].default is None
    assert issubclass(IRImageDataset, torch.utils.data.Dataset) and IRImage is LabelledImage


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A small CNN at the digits' own 8×8 size, pre-trained one epoch on digits 0–4 only."""
    torch.manual_seed(0)
    backbone = SmallCNN(in_channels=1, image_size=8, width=8, dim=32)
    pretrain_classifier(backbone, load_digits_dataset().only_classes(["0", "1", "2", "3", "4"]), epochs=1, seed=0)
    return backbone.save(tmp_path_factory.mktemp("backbone") / "tiny")


@pytest.fixture(scope="module")
def digits_records() -> dict[str, list[LabelledImage]]:
    splits = stratified_split(load_digits_dataset(), 0.2, 0.2, seed=0)
    return {"train": splits.train.records("train"), "val": splits.val.records("val"), "test": splits.test.records("test")}


def test_the_class_api_on_digits_in_chroma_improves_accuracy_and_calibration(tmp_path: Path, tiny_backbone: Path,
                                                                            digits_records) -> None:
    train, val, test = digits_records["train"], digits_records["val"], digits_records["test"]
    database = tmp_path / "chroma_db"
    extractor = EmbeddingExtractor()
    extractor.load_model(tiny_backbone)
    SimilaritySearcher.build(database, extractor, train, collection_name="ir_embeddings", space="l2")

    optimizer = ModelOptimizer.create_optimizer(str(database))  # the model path recorded in the collection
    assert optimizer.extractor.model_path == tiny_backbone and optimizer.searcher.count() == len(train)
    optimizer = ModelOptimizer(optimizer.extractor, optimizer.searcher,
                               config={"epochs": 5, "learning_rate": 3e-3, "output_dir": str(tmp_path / "out")})
    before = optimizer.evaluate(test)
    assert before["ece"] == before["ece_uncalibrated"]  # nothing fitted yet: the uncalibrated reading

    result = optimizer.optimize_similarity_scores(train, val)
    assert result["accuracy_improvement"] > 0 and result["fine_tuning"]["epochs_run"] == 5
    assert result["best_metric"]["metric"] in ("cosine", "dot", "euclidean")
    assert optimizer.searcher.space == {"cosine": "cosine", "dot": "ip", "euclidean": "l2"}[result["best_metric"]["metric"]]
    after = optimizer.evaluate(test)  # images no step has seen
    assert after["accuracy"] > before["accuracy"] + 0.02, (before, after)
    assert after["ece"] < after["ece_uncalibrated"] - 0.02, after  # calibration lowers ECE on held-out images

    # the confidences a search returns are the calibrated ones, rank-aware, also through the static methods
    query = optimizer.extractor.extract_embedding(test[0].image_data)
    hits, metrics = optimizer.searcher.search_similar(query, k=5)
    assert len(hits) == 5 and metrics["results_returned"] == 5
    for rank, hit in enumerate(hits):
        assert hit.metadata["rank"] == rank + 1 and 0.0 <= hit.confidence <= 1.0
        assert hit.confidence == pytest.approx(ModelOptimizer.improved_confidence_calculation(hit.similarity_score, rank, 5))
    assert ModelOptimizer.improved_confidence_calculation(0.9, 0, 5) > ModelOptimizer.improved_confidence_calculation(0.9, 4, 5)
    raw = optimizer.searcher.query(query[None, :], 5)
    converted = ModelOptimizer.improved_similarity_conversion(raw)
    assert [(h.image_id, h.object_class) for h in converted] == [(h.image_id, h.object_class) for h in hits]
    assert [h.similarity_score for h in converted] == pytest.approx([h.similarity_score for h in hits])
    embedding = ModelOptimizer.normalized_extract_embedding(test[0].image_data)
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)

    report = optimizer.generate_optimization_report()
    out = tmp_path / "out"
    saved = json.loads((out / "optimization_report.json").read_text())
    assert saved["calibration"]["ece_after"] == pytest.approx(after["ece"])
    assert report["calibration"]["evaluated_on"] == "held-out images"
    assert (out / "optimization_report.png").read_bytes()[:4] == b"\x89PNG"
    assert report["collection"]["entries"] == len(train) and len(report["metric_results"]) == 4
    model_dir = Path(report["model_path"])
    assert (model_dir / "model.safetensors").exists() and json.loads((model_dir / "checkpoint.json").read_text())["epoch"] == result["fine_tuning"]["best_epoch"]

    # a later process opens the same database: fine-tuned model and calibration come with the collection
    reopened = ModelOptimizer.create_optimizer(str(database))
    assert reopened.extractor.model_path == model_dir
    again, _ = reopened.searcher.search_similar(reopened.extractor.extract_embedding(test[0].image_data), k=5)
    assert [h.confidence for h in again] == pytest.approx([h.confidence for h in hits], abs=1e-5)


def test_quick_fixes_need_no_training_and_say_what_they_changed(chroma_server, tiny_backbone: Path, digits_records) -> None:
    """Against a Chroma server: an L2 collection of raw embeddings gets the best metric and a
    calibration fitted on the gallery itself (leave-one-out)."""
    extractor = EmbeddingExtractor()
    extractor.load_model(tiny_backbone)
    searcher = SimilaritySearcher.connect(chroma_server.extra["host"], chroma_server.extra["port"], "digits_quick_fixes")
    gallery = digits_records["train"]
    searcher.rebuild([r.id for r in gallery], extractor.extract_embeddings([r.image_data for r in gallery]),
                     [r.object_class for r in gallery], space="l2", model_path=tiny_backbone)
    optimizer = ModelOptimizer(extractor, searcher, config={"metrics_to_test": [
        {"metric": "euclidean", "normalization": False}, {"metric": "cosine", "normalization": True}]})
    scores = {tuple(c.values()): optimizer._evaluate_similarity_metric(None, c)["top1_accuracy"]
              for c in optimizer.settings.metrics_to_test}

    fixes = optimizer.apply_quick_fixes()
    best = max(scores, key=scores.get)
    assert fixes["similarity_metric"] == ("euclidean → cosine" if best[0] == "cosine" else "unchanged (euclidean)")
    assert searcher.space == ("cosine" if best[0] == "cosine" else "l2") and searcher.count() == len(gallery)
    assert "fitted on" in fixes["confidence_calibration"] and "leave-one-out" in fixes["confidence_calibration"]
    assert fixes["ece_after"] < fixes["ece_before"] and fixes["accuracy_after"] == pytest.approx(scores[best], abs=0.01)
    assert searcher.calibrator is not None
    reopened = SimilaritySearcher.connect(chroma_server.extra["host"], chroma_server.extra["port"], "digits_quick_fixes")
    reopened.initialize()
    assert reopened.calibrator == searcher.calibrator  # stored with the collection


def test_chroma_distances_become_similarities_per_space(tmp_path: Path) -> None:
    import chromadb

    assert distances_to_similarities([0.2], "cosine").tolist() == pytest.approx([0.8])
    assert distances_to_similarities([-2.0], "ip").tolist() == pytest.approx([3.0])  # ip distance = 1 − a·b
    assert distances_to_similarities([4.0], "l2").tolist() == pytest.approx([1 / 3])  # l2 distance is squared
    with pytest.raises(ValueError):
        distances_to_similarities([0.1], "hamming")

    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    legacy = client.create_collection("legacy_ip", metadata={"hnsw:space": "ip"}, embedding_function=None)
    legacy.add(ids=["a", "b"], embeddings=np.array([[1.0, 0.0], [0.0, 2.0]]),
               metadatas=[{"object_class": "x"}, {"object_class": "y"}])
    assert collection_space(legacy) == "ip"
    answer = legacy.query(query_embeddings=np.array([[3.0, 0.0]]), n_results=2, include=["distances", "metadatas"])
    hits = ModelOptimizer.improved_similarity_conversion({**answer, "space": "ip"})
    assert [(h.image_id, h.object_class) for h in hits] == [("a", "x"), ("b", "y")]
    assert [h.similarity_score for h in hits] == pytest.approx([3.0, 0.0])  # the inner products
    assert hits[0].metadata["raw_distance"] == pytest.approx(-2.0) and hits[1].metadata["rank"] == 2


def test_ir_image_dataset_and_image_conversion() -> None:
    images = [LabelledImage("a", np.full((4, 4, 3), 255, dtype=np.uint8), "cat"),
              LabelledImage("b", np.zeros((4, 4), dtype=np.float32), "ant")]
    dataset = IRImageDataset(images)
    assert dataset.class_to_idx == {"ant": 0, "cat": 1} and len(dataset) == 2
    image, label = dataset[0]
    assert image.shape == (3, 4, 4) and float(image.max()) == 1.0 and label == 1
    flipped = IRImageDataset(images, transform=lambda data: 1.0 - np.asarray(data, dtype=np.float32))
    assert float(flipped[1][0].min()) == 1.0
    assert image_tensor(torch.rand(1, 8, 8)).shape == (1, 8, 8)
    with pytest.raises(ValueError):
        image_tensor(np.zeros((2, 2, 2, 2)))
    stacked = IRImageDataset(images[1:], class_to_idx={"ant": 0, "cat": 1}).to_labelled_images()
    assert stacked.images.shape == (1, 1, 4, 4) and stacked.classes.names == ("ant", "cat")
    assert expected_calibration_error(np.array([1.0]), np.array([1.0])) == 0.0


def test_quick_fixes_command_on_an_embedded_database(tmp_path: Path, tiny_backbone: Path, digits_records) -> None:
    from typer.testing import CliRunner

    from worker.cli.main import app

    extractor = EmbeddingExtractor()
    extractor.load_model(tiny_backbone)
    SimilaritySearcher.build(tmp_path / "db", extractor, digits_records["val"], space="ip")
    result = CliRunner().invoke(app, ["images-quick-fixes", "--database", str(tmp_path / "db"),
                                      "--output-dir", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    fixes = json.loads(result.output[result.output.index("{"):])
    assert {"embedding_normalization", "similarity_metric", "confidence_calibration", "ece_before", "ece_after"} <= set(fixes)
    assert (tmp_path / "report" / "optimization_report.png").exists()
    missing = CliRunner().invoke(app, ["images-quick-fixes", "--database", str(tmp_path / "db"), "--collection-name", "nope"])
    assert missing.exit_code == 2
