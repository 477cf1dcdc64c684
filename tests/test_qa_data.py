"""Q&A input handling: JSONL validation, question-level split, loss columns, config, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from finetuning.qa.config import QATrainingConfig
from finetuning.qa.data import read_qa_jsonl, retrieval_targets, split_pairs, text_id
from finetuning.qa.losses import _pair_columns
from finetuning.qa.trainer import last_complete_checkpoint


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_invalid_lines_are_reported_with_line_number_and_reason(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "1", "question": "q1", "answer": "a1", "context": "c1", "file_name": "f.pdf"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "3", "question": "  ", "answer": "a3"}),
        json.dumps({"id": "4", "question": "q4"}),
        "",
        json.dumps({"id": 5, "question": "q5", "answer": "a5"}),
        json.dumps({"id": "1", "question": "q1 again", "answer": "a"}),
    ]
    result = read_qa_jsonl(_write(tmp_path / "qa.jsonl", lines))
    assert [pair.id for pair in result.pairs] == ["1", "5"]
    assert result.pairs[0].context == "c1" and result.pairs[0].file_name == "f.pdf"
    reasons = {bad.line_number: bad.reason for bad in result.invalid}
    assert set(reasons) == {2, 3, 4, 5, 8}
    assert "not valid JSON" in reasons[2]
    assert "JSON object" in reasons[3]
    assert "question" in reasons[4] and "blank" in reasons[4]
    assert "answer" in reasons[5] and "required" in reasons[5].lower()
    assert "duplicate id" in reasons[8]
    assert result.counts == {"lines": 8, "valid": 2, "invalid": 5, "duplicate_ids": 1}


def test_split_keeps_each_question_on_one_side_and_is_reproducible() -> None:
    from finetuning.qa.data import QAPair

    pairs = [QAPair(id=f"{q}-{a}", question=f"question {q}", answer=f"answer {q}-{a}") for q in range(20) for a in range(2)]
    train, held_out = split_pairs(pairs, 0.8, seed=7)
    assert len(train) == 32 and len(held_out) == 8
    assert not {p.question for p in train} & {p.question for p in held_out}
    assert split_pairs(pairs, 0.8, seed=7) == (train, held_out)
    assert split_pairs(pairs, 0.8, seed=8) != (train, held_out)

    targets = retrieval_targets(held_out, pairs)
    assert len(targets.queries) == 4 and len(targets.corpus) == 40
    for qid, relevant in targets.relevant.items():
        assert len(relevant) == 2
        assert all(targets.corpus[cid].startswith("answer " + targets.queries[qid].split()[-1] + "-") for cid in relevant)
    assert text_id("x") == text_id("x") != text_id("y")


def test_pair_losses_get_true_pairs_and_other_questions_answers_as_negatives() -> None:
    from finetuning.qa.data import QAPair

    pairs = [QAPair(id="1", question="q1", answer="shared"), QAPair(id="2", question="q1", answer="a1b"),
             QAPair(id="3", question="q2", answer="shared"), QAPair(id="4", question="q3", answer="a3")]
    left, right, labels = _pair_columns(pairs, "answer", negatives_per_pair=2, seed=0)
    relevant = {"q1": {"shared", "a1b"}, "q2": {"shared"}, "q3": {"a3"}}
    assert labels.count(1.0) == 4
    for question, answer, label in zip(left, right, labels):
        assert (answer in relevant[question]) == (label == 1.0)
    assert labels.count(0.0) == 1 + 1 + 2 + 2  # q1 has only one non-relevant answer


def test_config_file_and_cli_overrides(tmp_path: Path) -> None:
    defaults = QATrainingConfig()
    assert (defaults.max_seq_length, defaults.epochs, defaults.train_batch_size, defaults.eval_batch_size,
            defaults.learning_rate, defaults.train_split, defaults.loss, defaults.warmup_ratio) == (
        384, 3, 16, 16, 2e-5, 0.9, "MultipleNegativesRankingLoss", 0.1)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 5, "loss": "ContrastiveLoss", "learning_rate": 1e-4,
                                "tracking_uri": "http://user:pw@host:5000"}))
    config = QATrainingConfig.from_json(path, {"epochs": 2, "learning_rate": None})
    assert config.epochs == 2 and config.learning_rate == 1e-4 and config.loss == "ContrastiveLoss"
    assert "pw" not in json.dumps(config.public_params()) and "pw" not in repr(config)
    with pytest.raises(ValidationError):
        QATrainingConfig.from_json(path, {"loss": "NoSuchLoss"})
    with pytest.raises(ValidationError):
        QATrainingConfig(eval_steps=3, save_steps=5)


def test_last_complete_checkpoint_skips_a_checkpoint_killed_while_saving(tmp_path: Path) -> None:
    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, state in ((5, '{"global_step": 5}'), (10, '{"global_step": 10}'), (15, '{"glob')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-20").mkdir()  # nothing written yet
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_documented_key_names_are_accepted_beside_clicktunes(tmp_path: Path) -> None:
    path = tmp_path / "documented.json"
    path.write_text(json.dumps({"num_epochs": 5, "loss_function": "contrastiveloss", "evaluation_steps": 4,
                                "save_steps": 8, "train_batch_size": 8, "log_file": "logs/embedding_finetuning.log"}))
    config = QATrainingConfig.from_json(path)
    assert (config.epochs, config.loss, config.eval_steps, config.train_batch_size) == (5, "ContrastiveLoss", 4, 8)
    assert config.log_path == Path("logs/embedding_finetuning.log")
    assert QATrainingConfig(output_dir=tmp_path).log_path == tmp_path / "logs" / "embedding_finetuning.log"
    # a command-line override replaces the setting whichever spelling the file used
    assert QATrainingConfig.from_json(path, {"epochs": 2}).epochs == 2
    assert QATrainingConfig.model_validate({"num_epochs": 2, "epochs": 2}).epochs == 2
    with pytest.raises(ValidationError) as conflict:
        QATrainingConfig.model_validate({"num_epochs": 2, "epochs": 3})
    assert "num_epochs" in str(conflict.value) and "epochs=3" in str(conflict.value)
    with pytest.raises(ValidationError) as conflict:
        QATrainingConfig.model_validate({"loss": "ContrastiveLoss", "loss_function": "CosineSimilarityLoss"})
    assert "loss_function" in str(conflict.value) and "loss=" in str(conflict.value)
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"num_epochs": 2, "epochs": 3}))
    with pytest.raises(ValueError, match="num_epochs"):
        QATrainingConfig.from_json(both)
    with pytest.raises(ValidationError):
        QATrainingConfig.model_validate({"nmu_epochs": 2})  # a misspelt key is still refused


def test_the_shipped_example_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    documented = QATrainingConfig.from_json(root / "examples" / "embedding_finetuner.json")
    assert (documented.epochs, documented.loss, documented.base_model) == (3, "MultipleNegativesRankingLoss",
                                                                          "sentence-transformers/all-MiniLM-L6-v2")
    assert read_qa_jsonl(root / documented.input_jsonl).counts["invalid"] == 0  # type: ignore[operator]
    assert QATrainingConfig.from_json(root / "examples" / "qa_config.json").eval_steps == 50
