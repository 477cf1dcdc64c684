"""Q&A fine-tuning end to end: every loss, kill-and-resume through the CLI, --test_only, and a real
improvement of all-MiniLM-L6-v2 on a SciFact slice."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetuning.qa import QATrainingConfig, run_qa

REPO_ROOT = Path(__file__).resolve().parents[1]
TOPICS = "gene protein cell cancer risk blood drug study effect patients".split()


def build_tiny_model(directory: Path) -> Path:
    """A random 2-layer BERT (hidden 32) with a small WordPiece vocabulary, saved as an HF dir."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TOPICS, "what", "is", "the", "of",
             *chars, *("##" + c for c in chars)]
    (directory / "vocab.txt").write_text("\n".join(vocab))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(directory)
    vocabulary = {token: index for index, token in enumerate(vocab)}
    BertTokenizerFast(vocab=vocabulary).save_pretrained(directory)
    assert BertTokenizerFast.from_pretrained(directory).tokenize("what is the gene 12") == ["what", "is", "the", "gene", "1", "##2"]
    return directory


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(120):
        topic = rng.choice(TOPICS)
        lines.append(json.dumps({"id": str(i), "question": f"what is the {topic} {i}", "answer": f"the {topic} of {i} is {i * 7}"}))
    lines.insert(3, "garbage line")
    path = tmp_path_factory.mktemp("qa") / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _metrics_lines(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "training_metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss", ["MultipleNegativesRankingLoss", "ContrastiveLoss", "CosineSimilarityLoss", "OnlineContrastiveLoss"])
def test_each_loss_trains_and_writes_progress_and_a_loadable_model(tmp_path: Path, tiny_model: Path, tiny_pairs: Path, loss: str) -> None:
    from sentence_transformers import SentenceTransformer

    config = QATrainingConfig(input_jsonl=tiny_pairs, output_dir=tmp_path / "out", base_model=str(tiny_model), loss=loss,
                              epochs=1, max_steps=6, train_batch_size=8, save_steps=3, logging_steps=2, max_seq_length=32)
    result = run_qa(config)
    assert result.completed and result.global_step == 6
    assert result.read_counts["invalid"] == 1 and result.invalid_lines[0]["line_number"] == 4
    progress = json.loads((tmp_path / "out" / "training_progress.json").read_text())
    assert progress["completed"] is True and progress["loss"] == loss
    assert progress["train_examples"] + progress["eval_examples"] == 120
    assert progress["final_model_path"] == str(tmp_path / "out" / "final_model")
    assert progress["duration_seconds"] >= 0 and progress["finished_at"] >= progress["started_at"]
    assert set(result.metrics_after) >= {"mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10"}
    losses = [line for line in _metrics_lines(tmp_path / "out") if "loss" in line]
    assert [line["step"] for line in losses] == [2, 4, 6]
    assert all({"timestamp", "epoch", "step", "loss"} <= set(line) for line in losses)
    assert (tmp_path / "out" / "logs" / "embedding_finetuning.log").stat().st_size > 0
    model = SentenceTransformer(str(tmp_path / "out" / "final_model"))
    assert model.encode(["what is the gene 1"]).shape == (1, 32)
    if loss != "MultipleNegativesRankingLoss":
        assert progress["train_rows"] == 2 * progress["train_examples"]  # one negative per pair


def test_test_only_evaluates_the_existing_model_without_training(tmp_path: Path, tiny_model: Path, tiny_pairs: Path) -> None:
    out = tmp_path / "out"
    base = run_qa(QATrainingConfig(input_jsonl=tiny_pairs, output_dir=out, base_model=str(tiny_model), test_only=True))
    assert base.test_only and base.model_path == str(tiny_model) and not (out / "checkpoints").exists()
    run_qa(QATrainingConfig(input_jsonl=tiny_pairs, output_dir=out, base_model=str(tiny_model), epochs=1, max_steps=4,
                            train_batch_size=8, learning_rate=1e-3, save_steps=4, max_seq_length=32))
    trained = run_qa(QATrainingConfig(input_jsonl=tiny_pairs, output_dir=out, base_model=str(tiny_model), test_only=True))
    assert trained.model_path == str(out / "final_model")
    saved = json.loads((out / "test_results.json").read_text())
    assert saved["metrics_after"] == trained.metrics_after and saved["eval_examples"] == 12
    assert trained.metrics_after != base.metrics_after  # another model, other scores


DOCUMENTED_PROGRESS_FIELDS = {"training_completed", "completed_at", "duration_seconds", "base_model", "num_epochs",
                               "train_examples", "eval_examples", "final_model_path"}


def test_the_documented_config_file_trains_minilm_and_writes_the_documented_files(tmp_path: Path) -> None:
    """The config file as the fine-tuner's users write it, verbatim, through the CLI: trains the
    packaged all-MiniLM-L6-v2 (no download) and writes the documented progress, metrics and log."""
    from typer.testing import CliRunner

    from worker.cli.main import app

    pairs = tmp_path / "qa_pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": str(i), "question": f"What is the {topic} number {i}?",
                                         "answer": f"The {topic} number {i} is {i * 7}."}) + "\n"
                             for i, topic in enumerate(TOPICS * 2)))
    out = tmp_path / "models" / "fine_tuned_embeddings"
    config = tmp_path / "embedding_finetuner.json"
    config.write_text(json.dumps({"input_jsonl": str(pairs), "output_dir": str(out),
                                  "base_model": "sentence-transformers/all-MiniLM-L6-v2", "num_epochs": 3,
                                  "train_batch_size": 16, "loss_function": "MultipleNegativesRankingLoss"}))
    result = CliRunner().invoke(app, ["qa-train", "--config", str(config)])
    assert result.exit_code == 0, result.output

    progress = json.loads((out / "training_progress.json").read_text())
    assert DOCUMENTED_PROGRESS_FIELDS <= set(progress)
    assert progress["training_completed"] is True and progress["completed"] is True
    assert progress["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and progress["num_epochs"] == 3
    assert (progress["train_examples"], progress["eval_examples"]) == (18, 2)
    assert progress["final_model_path"] == str(out / "final_model") and (out / "final_model").is_dir()
    assert progress["completed_at"] >= progress["started_at"] and progress["duration_seconds"] > 0
    assert progress["loss"] == "MultipleNegativesRankingLoss" and progress["global_step"] == 6  # 2 steps x 3 epochs

    losses = [line for line in _metrics_lines(out) if "loss" in line]
    assert [line["step"] for line in losses] == [2, 4, 6]  # one per logging step, at least one per epoch
    for line in losses:
        assert {"timestamp", "epoch", "step", "loss"} <= set(line) and line["loss"] > 0
    assert [round(line["epoch"]) for line in losses] == [1, 2, 3]
    log = (out / "logs" / "embedding_finetuning.log").read_text()
    assert "Loaded 20 Q&A pairs" in log and "Training examples: 18" in log and "Validation examples: 2" in log


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from worker.cli.main import app; app()", "qa-train", *args]


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_model: Path, tiny_pairs: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"max_seq_length": 32, "save_steps": 10, "logging_steps": 5, "save_total_limit": 3}))
    args = _cli("--config", str(config), "--input_jsonl", str(tiny_pairs), "--output_dir", str(out),
                "--base_model", str(tiny_model), "--epochs", "6", "--batch_size", "8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")):
            assert process.poll() is None, "training ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed = json.loads((out / "training_progress.json").read_text())
    assert killed["completed"] is False and killed["attempt"] == 1
    total_steps = killed["total_steps"]
    assert 10 <= killed["global_step"] < total_steps

    finished = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    progress = json.loads((out / "training_progress.json").read_text())
    assert progress["completed"] is True and progress["attempt"] == 2
    resumed_step = progress["resumed_from_step"]
    assert resumed_step >= 10 and resumed_step % 10 == 0
    assert progress["resumed_from_checkpoint"].endswith(f"checkpoint-{resumed_step}")
    assert progress["global_step"] == total_steps
    lines = _metrics_lines(out)
    second = [line["step"] for line in lines if line["attempt"] == 2]
    assert second and min(second) > resumed_step  # the global step continued, nothing was redone from 0
    assert [line for line in lines if line["attempt"] == 1 and "loss" in line]
    lines_out = finished.stdout.splitlines()
    start = max(i for i, line in enumerate(lines_out) if line == "{")  # the summary is printed last
    summary = json.loads("\n".join(lines_out[start:]))
    assert summary["resumed_from_checkpoint"] == progress["resumed_from_checkpoint"]


def _scifact_pairs(scifact_dir: Path, path: Path, limit: int) -> Path:
    corpus = {}
    with (scifact_dir / "corpus.jsonl").open() as handle:
        for line in handle:
            doc = json.loads(line)
            corpus[doc["_id"]] = f"{doc['title']} {doc['text']}".strip()
    queries = {}
    with (scifact_dir / "queries.jsonl").open() as handle:
        for line in handle:
            query = json.loads(line)
            queries[query["_id"]] = query["text"]
    with (scifact_dir / "qrels" / "train.tsv").open() as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t")][1:]
    with path.open("w") as out:
        for query_id, corpus_id, score in rows[:limit]:
            if int(score) > 0:
                out.write(json.dumps({"id": f"{query_id}-{corpus_id}", "question": queries[query_id],
                                      "answer": corpus[corpus_id], "file_name": corpus_id}) + "\n")
    return path


@pytest.mark.slow
def test_minilm_on_scifact_train_pairs_improves_held_out_mrr(tmp_path: Path, scifact_dir: Path) -> None:
    pairs = _scifact_pairs(scifact_dir, tmp_path / "scifact_qa.jsonl", limit=300)
    config = QATrainingConfig(input_jsonl=pairs, output_dir=tmp_path / "out", base_model="all-MiniLM-L6-v2",
                              epochs=1, learning_rate=5e-5, train_split=0.7, max_seq_length=128)
    result = run_qa(config)
    assert result.completed and result.eval_examples > 60
    assert result.metrics_after["mrr@10"] > result.metrics_before["mrr@10"] + 0.01, (result.metrics_before, result.metrics_after)
    assert result.metrics_after["ndcg@10"] > result.metrics_before["ndcg@10"]


def test_a_run_with_a_tracking_uri_is_recorded_in_mlflow_without_the_uri(tmp_path: Path, tiny_model: Path, tiny_pairs: Path,
                                                                          mlflow_server, caplog) -> None:
    """Against the real ``mlflow server``: params (without the secret URI), metrics before/while/after
    training, the final model and the progress files as artifacts, the run FINISHED."""
    import logging

    import mlflow

    host = mlflow_server.url.split("://", 1)[1]
    secret_uri = f"http://qa-user:qa-s3cret-pw@{host}"  # credentials in the URI: must never be recorded
    caplog.set_level(logging.DEBUG)
    config = QATrainingConfig(input_jsonl=tiny_pairs, output_dir=tmp_path / "out", base_model=str(tiny_model), epochs=1,
                              max_steps=4, train_batch_size=8, save_steps=2, logging_steps=2, max_seq_length=32,
                              tracking_uri=secret_uri, experiment_name="qa-mlflow-test")
    result = run_qa(config)
    assert result.completed and result.mlflow_run_id

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "qa-mlflow-test"
    params = run.data.params
    assert params["loss"] == "MultipleNegativesRankingLoss" and params["max_steps"] == "4"
    assert "tracking_uri" not in params and not any("s3cret" in value for value in params.values())
    metrics = run.data.metrics
    assert {"before_mrr_at_10", "after_mrr_at_10", "train_loss", "eval_mrr_at_10"} <= set(metrics)
    assert metrics["after_mrr_at_10"] == pytest.approx(result.metrics_after["mrr@10"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [2, 4]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"final_model", "training_metrics.jsonl", "training_progress.json"} <= artifacts
    progress_text = (tmp_path / "out" / "training_progress.json").read_text()
    assert json.loads(progress_text)["mlflow_run_id"] == run.info.run_id
    assert "s3cret" not in progress_text and "s3cret" not in caplog.text
    assert "s3cret" not in (tmp_path / "out" / "logs" / "embedding_finetuning.log").read_text()
