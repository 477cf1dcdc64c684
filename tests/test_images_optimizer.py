"""The image optimizer on scikit-learn's real digits: accuracy improves, calibration lowers ECE,
the report exists; and the same run as a worker task through the real lifecycle runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetuning.images import ImageOptimizerConfig, OptimizedImageModel, load_digits_dataset, optimize_images
from finetuning.images.digits import build_pretrained_digits_backbone


@pytest.fixture(scope="module")
def pretrained_backbone(tmp_path_factory) -> Path:
    """A SmallCNN pre-trained for 2 epochs on digits 0–4 only."""
    return build_pretrained_digits_backbone(tmp_path_factory.mktemp("backbone") / "bb", epochs=2, seed=0)


@pytest.mark.slow
def test_digits_accuracy_improves_and_calibration_lowers_ece(tmp_path: Path, pretrained_backbone: Path) -> None:
    progress: list[dict] = []
    config = ImageOptimizerConfig(backbone_dir=pretrained_backbone, output_dir=tmp_path / "out", epochs=10)
    result = optimize_images(config, load_digits_dataset(), on_progress=progress.append)
    report = result.report
    chosen = report["chosen_metric"]
    assert chosen in ("cosine", "dot", "euclidean")
    assert report["val_top1_after"][chosen] == max(report["val_top1_after"].values())
    assert report["test_top1_after"][chosen] > report["test_top1_before"][chosen] + 0.03, report
    calibration = report["calibration"]
    assert calibration["ece_after"] < calibration["ece_before"], calibration
    assert report["sizes"]["test"] >= 350 and report["epochs_run"] == 10

    out = tmp_path / "out"
    for name in ("report.json", "report.png", "calibration.json", "class_mapping.json", "model/model.safetensors"):
        assert (out / name).exists(), name
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "report.json").read_text())["chosen_metric"] == chosen
    assert list((out / "checkpoints").glob("best-*.ckpt")) and (out / "checkpoints" / "last.ckpt").exists()
    assert [p["epoch"] for p in progress if p["stage"] == "training"] == list(range(1, 11))

    model = OptimizedImageModel(out)
    assert model.metric == chosen and model.classes.names == tuple(str(i) for i in range(10))
    high, low = model.confidence(0.99, 1, 1077), model.confidence(0.2, 1, 1077)
    assert 0.0 <= low <= high <= 1.0
    images = load_digits_dataset().images[:4]
    assert torch.allclose(model.embed(images), model.backbone.encode(images))


@pytest.mark.slow
def test_image_optimization_task_through_the_lifecycle(tmp_path: Path, mongo_server, mongo_db, pretrained_backbone: Path) -> None:
    from dao.task_documents import TaskStatus
    from dao.tasks import TasksDAO
    from worker.jobs import image_job
    from worker.lifecycle import run_task
    from worker.settings import Settings

    settings = Settings(mongo_url=mongo_server.url, mongo_db=mongo_db.name)
    request = image_job.ImageOptimizationRequest(output_dir=str(tmp_path / "task_out"), dataset="digits",
                                                  backbone_dir=str(pretrained_backbone), options={"epochs": 2})
    dao = TasksDAO.for_kind(mongo_db, image_job.KIND)
    task_id = dao.create(request, max_attempts=1).task.id
    assert run_task(image_job.KIND, task_id, image_job.run, settings=settings, db=mongo_db) == TaskStatus.done
    task = dao.get(task_id)
    assert task.result["chosen_metric"] in ("cosine", "dot", "euclidean")
    assert Path(task.result["report"]).exists()
    assert task.progress.stage == "done" and task.progress.fraction == 1.0

    bad = image_job.ImageOptimizationRequest(output_dir=str(tmp_path / "bad"), dataset="folder",
                                              images_dir=str(tmp_path / "missing"), backbone_dir=str(tmp_path / "missing"))
    bad_id = dao.create(bad, max_attempts=1).task.id
    assert run_task(image_job.KIND, bad_id, image_job.run, settings=settings, db=mongo_db) == TaskStatus.refused
    assert "cannot read" in dao.get(bad_id).detail


@pytest.mark.slow
def test_images_optimize_cli_on_digits(tmp_path: Path, pretrained_backbone: Path) -> None:
    from typer.testing import CliRunner

    from worker.cli.main import app

    out = tmp_path / "cli_out"
    result = CliRunner().invoke(app, ["images-optimize", "--digits", "--backbone-dir", str(pretrained_backbone),
                                      "--output-dir", str(out), "--epochs", "1", "--calibration", "isotonic"])
    assert result.exit_code == 0, result.output
    # stdout alone: library warnings go to stderr, which CliRunner's ``output`` mixes in
    summary, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index("{"):])
    assert summary["report"] == str(out / "report.json") and (out / "report.png").exists()
    assert json.loads((out / "calibration.json").read_text())["method"] == "isotonic"
    refused = CliRunner().invoke(app, ["images-optimize", "--output-dir", str(out)])
    assert refused.exit_code == 2
