"""Image optimizer parts: losses, similarity metrics, calibration, backbones (ours and HF CLIP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finetuning.images.backbone import BACKBONE_CONFIG_FILE, SmallCNN, detect_layout, load_backbone
from finetuning.images.calibration import SimilarityCalibrator, expected_calibration_error, raw_confidence, reliability_bins
from finetuning.images.data import ClassMapping, load_digits_dataset, stratified_split
from finetuning.images.losses import batch_hard_triplet_loss, supervised_contrastive_loss
from finetuning.images.similarity import choose_metric, retrieve, similarity_matrix, top1_accuracy_by_metric


def test_losses_are_lower_when_classes_are_separated() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    centers = torch.eye(3) * 5
    separated = centers[labels] + 0.05 * torch.randn(6, 3)
    mixed = torch.randn(6, 3)
    assert supervised_contrastive_loss(separated, labels) < supervised_contrastive_loss(mixed, labels)
    assert batch_hard_triplet_loss(separated, labels) == 0.0
    assert batch_hard_triplet_loss(mixed, labels) > 0.0
    no_pairs = torch.tensor([0, 1, 2, 3, 4, 5])
    assert supervised_contrastive_loss(mixed, no_pairs) == 0.0
    mixed.requires_grad_(True)
    supervised_contrastive_loss(mixed, labels).backward()
    assert mixed.grad is not None and mixed.grad.abs().sum() > 0


def test_similarity_metrics_and_top1() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    queries = torch.tensor([[2.0, 0.5], [0.0, 1.0]])
    assert torch.allclose(similarity_matrix(queries, gallery, "dot"), queries @ gallery.T)
    assert torch.allclose(similarity_matrix(queries, gallery, "euclidean"), -torch.cdist(queries, gallery))
    assert similarity_matrix(queries, gallery, "cosine").max() <= 1.0 + 1e-6
    labels = torch.tensor([0, 1])
    accuracies = top1_accuracy_by_metric(queries, labels, gallery, labels)
    assert accuracies["cosine"] == 1.0 and accuracies["dot"] == 0.5  # the long gallery vector wins every dot product
    assert choose_metric(accuracies) == "cosine"
    assert choose_metric({"cosine": 0.5, "dot": 0.5, "euclidean": 0.9}) == "euclidean"
    result = retrieve(queries, labels, gallery, labels, "cosine", k=2)
    assert result.correct.tolist() == [[True, False], [True, False]] and result.total == 2
    with pytest.raises(ValueError):
        similarity_matrix(queries, gallery, "manhattan")


def test_calibrators_fit_a_monotone_curve_and_round_trip_as_json() -> None:
    rng = np.random.default_rng(0)
    similarity = rng.uniform(0.2, 1.0, 2000)
    correct = (rng.uniform(size=2000) < (similarity - 0.2) / 0.8).astype(float)  # true P(correct) = (s-0.2)/0.8
    raw_ece = expected_calibration_error(raw_confidence(similarity, "cosine"), correct)
    for method in ("isotonic", "logistic"):
        calibrator = SimilarityCalibrator.fit(similarity, np.ones(2000), np.full(2000, 50), correct, method, "cosine")
        low, high = calibrator.confidence(0.3), calibrator.confidence(0.95)
        assert 0.0 <= low < high <= 1.0
        assert expected_calibration_error(calibrator.confidences(similarity), correct) < raw_ece
        again = SimilarityCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
        assert again.confidence(0.7, 2, 50) == pytest.approx(calibrator.confidence(0.7, 2, 50))
    with pytest.raises(ValueError):
        calibrator.confidence(0.5, rank=0)


def test_logistic_calibration_uses_the_rank() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    rank = rng.integers(1, 6, n).astype(float)
    similarity = rng.uniform(0, 1, n)
    correct = (rng.uniform(size=n) < similarity / rank).astype(float)
    calibrator = SimilarityCalibrator.fit(similarity, rank, np.full(n, 100), correct, "logistic")
    assert calibrator.confidence(0.8, 1, 100) > calibrator.confidence(0.8, 4, 100)


def test_ece_and_bins_on_known_values() -> None:
    confidence = np.array([0.95, 0.95, 0.15, 0.15])
    correct = np.array([1.0, 0.0, 0.0, 0.0])
    bins = reliability_bins(confidence, correct, n_bins=10)
    assert [(b["count"], b["accuracy"]) for b in bins] == [(2, 0.0), (2, 0.5)]
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.15 + 0.5 * 0.45)
    assert raw_confidence(np.array([-0.5, 0.5]), "cosine").tolist() == [0.0, 0.5]
    assert raw_confidence(np.array([0.0]), "euclidean").tolist() == [1.0]


def test_digits_split_and_class_mapping(tmp_path: Path) -> None:
    data = load_digits_dataset()
    assert data.images.shape == (1797, 1, 8, 8) and float(data.images.max()) == 1.0
    splits = stratified_split(data, 0.2, 0.2, seed=0)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    assert abs(len(splits.test) - 360) <= 1 and set(splits.test.labels.tolist()) == set(range(10))
    data.classes.save(tmp_path / "classes.json")
    assert ClassMapping.load(tmp_path / "classes.json") == data.classes
    assert data.only_classes(["3", "7"]).labels.unique().tolist() == [3, 7]


def test_small_cnn_saves_and_loads_to_identical_embeddings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, image_size=16, width=8, dim=12)
    model.save(tmp_path / "cnn")
    assert detect_layout(tmp_path / "cnn") == "small_cnn" and (tmp_path / "cnn" / BACKBONE_CONFIG_FILE).exists()
    loaded = load_backbone(tmp_path / "cnn")
    images = torch.rand(5, 1, 8, 8)  # any size: prepare() resizes
    assert torch.allclose(model.encode(images), loaded.encode(images), atol=1e-6)
    assert loaded.encode(images).shape == (5, 12)


def test_hf_clip_vision_directory_is_a_backbone(tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip")
    backbone = load_backbone(tmp_path / "clip")
    assert backbone.kind == "hf_clip" and backbone.embedding_dim == 16 and backbone.in_channels == 3
    grey = torch.rand(3, 1, 8, 8)  # one channel, small: adapted and resized
    embeddings = backbone.encode(grey)
    assert embeddings.shape == (3, 16)
    backbone.save(tmp_path / "clip_saved")
    assert torch.allclose(load_backbone(tmp_path / "clip_saved").encode(grey), embeddings, atol=1e-5)


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError):
        load_backbone(tmp_path)
