"""Q&A pairs from a JSONL file: validation with reasons, a reproducible split, retrieval targets.

One line is one JSON object ``{"id", "question", "answer", "context"?, "file_name"?}``. A line
that is not JSON, not an object, or misses/blanks a required field is reported as
``InvalidLine(line_number, reason)`` and skipped; blank lines are ignored silently.

The split is by *question*: all pairs of one question land on the same side, so a held-out
question was never seen in training.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


class QAPair(BaseModel):
    """One question with one answer (and optionally the passage and file it comes from)."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str
    question: str
    answer: str
    context: str | None = None
    file_name: str | None = None

    @field_validator("id", "question", "answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def answer_for_model(self, mode: Literal["answer", "context", "answer_and_context"]) -> str:
        """The text the model embeds as this pair's answer."""
        if mode == "context":
            return self.context or self.answer
        if mode == "answer_and_context" and self.context:
            return f"{self.answer}\n{self.context}"
        return self.answer


@dataclass(frozen=True)
class InvalidLine:
    line_number: int
    reason: str


@dataclass
class QAReadResult:
    pairs: list[QAPair] = field(default_factory=list)
    invalid: list[InvalidLine] = field(default_factory=list)
    total_lines: int = 0
    duplicate_ids: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "lines": self.total_lines,
            "valid": len(self.pairs),
            "invalid": len(self.invalid),
            "duplicate_ids": self.duplicate_ids,
        }


def _reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "line"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def read_qa_jsonl(path: str | Path) -> QAReadResult:
    """Parse and validate every line of ``path``; never raises for a bad line (see module doc).

    A repeated ``id`` is kept once (the first occurrence) and counted in ``duplicate_ids``, and
    also listed as invalid with its line number so the user can fix the file.
    """
    result = QAReadResult()
    seen: set[str] = set()
    with Path(path).open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            result.total_lines = number
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as error:
                result.invalid.append(InvalidLine(number, f"not valid JSON: {error.msg}"))
                continue
            if not isinstance(value, dict):
                result.invalid.append(InvalidLine(number, f"expected a JSON object, got {type(value).__name__}"))
                continue
            try:
                pair = QAPair.model_validate(value)
            except ValidationError as error:
                result.invalid.append(InvalidLine(number, _reason(error)))
                continue
            if pair.id in seen:
                result.duplicate_ids += 1
                result.invalid.append(InvalidLine(number, f"duplicate id {pair.id!r}"))
                continue
            seen.add(pair.id)
            result.pairs.append(pair)
    return result


def split_pairs(pairs: list[QAPair], train_split: float, seed: int) -> tuple[list[QAPair], list[QAPair]]:
    """Split by distinct question (seeded shuffle); at least one question on each side when possible."""
    questions = sorted({pair.question for pair in pairs})
    random.Random(seed).shuffle(questions)
    n_train = int(round(len(questions) * train_split))
    if len(questions) >= 2:
        n_train = min(max(n_train, 1), len(questions) - 1)
    train_questions = set(questions[:n_train])
    train = [pair for pair in pairs if pair.question in train_questions]
    held_out = [pair for pair in pairs if pair.question not in train_questions]
    return train, held_out


def text_id(text: str) -> str:
    """A stable id for a text (answers have no id of their own that is shared across pairs)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class RetrievalTargets:
    """Held-out questions, the answer corpus, and which answers are relevant to each question."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant: dict[str, set[str]]


def retrieval_targets(
    held_out: list[QAPair],
    corpus_pairs: list[QAPair],
    answer_text: Literal["answer", "context", "answer_and_context"] = "answer",
) -> RetrievalTargets:
    """Questions of ``held_out`` retrieve among the distinct answers of ``corpus_pairs`` (which
    should include ``held_out``: usually every pair, so train answers act as distractors)."""
    corpus: dict[str, str] = {}
    for pair in corpus_pairs + held_out:
        text = pair.answer_for_model(answer_text)
        corpus[text_id(text)] = text
    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for pair in held_out:
        qid = text_id(pair.question)
        queries[qid] = pair.question
        relevant.setdefault(qid, set()).add(text_id(pair.answer_for_model(answer_text)))
    return RetrievalTargets(queries=queries, corpus=corpus, relevant=relevant)
