"""Loss name → (sentence-transformers loss, training columns built from Q&A pairs).

- ``MultipleNegativesRankingLoss`` (default): columns ``(anchor, positive)``; every other answer
  in the batch is a negative (in-batch negatives, trained with a no-duplicates batch sampler).
- ``ContrastiveLoss`` / ``OnlineContrastiveLoss``: ``(sentence1, sentence2, label)`` with label 1
  for the true pair and 0 for ``negatives_per_pair`` answers of *other* questions.
- ``CosineSimilarityLoss``: the same pairs with a float ``score`` (1.0 / 0.0).

A negative is never an answer that is also relevant to the question (questions can share answers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from torch import nn

from finetuning.qa.config import LossName
from finetuning.qa.data import QAPair

IN_BATCH_LOSSES: frozenset[str] = frozenset({"MultipleNegativesRankingLoss"})


@dataclass
class LossSetup:
    loss: nn.Module
    columns: dict[str, list[Any]]
    in_batch_negatives: bool


def _sample_negatives(rng: random.Random, answers: list[str], relevant: set[str], k: int) -> list[str]:
    """Up to ``k`` distinct answers not in ``relevant`` (rejection sampling: O(k), not O(corpus))."""
    available = len(answers) - len(relevant)
    k = min(k, max(available, 0))
    chosen: set[str] = set()
    while len(chosen) < k:
        answer = answers[rng.randrange(len(answers))]
        if answer not in relevant:
            chosen.add(answer)
    return sorted(chosen)


def _pair_columns(pairs: list[QAPair], answer_text: str, negatives_per_pair: int, seed: int) -> tuple[list[str], list[str], list[float]]:
    answers_of: dict[str, set[str]] = {}
    for pair in pairs:
        answers_of.setdefault(pair.question, set()).add(pair.answer_for_model(answer_text))  # type: ignore[arg-type]
    all_answers = sorted({answer for answers in answers_of.values() for answer in answers})
    rng = random.Random(seed)
    left: list[str] = []
    right: list[str] = []
    labels: list[float] = []
    for pair in pairs:
        positive = pair.answer_for_model(answer_text)  # type: ignore[arg-type]
        left.append(pair.question)
        right.append(positive)
        labels.append(1.0)
        for negative in _sample_negatives(rng, all_answers, answers_of[pair.question], negatives_per_pair):
            left.append(pair.question)
            right.append(negative)
            labels.append(0.0)
    return left, right, labels


def build_loss(name: LossName, model: Any, pairs: list[QAPair], answer_text: str = "answer",
               negatives_per_pair: int = 1, seed: int = 42) -> LossSetup:
    """The loss module bound to ``model`` and the dataset columns it expects."""
    from sentence_transformers.sentence_transformer import losses

    if name == "MultipleNegativesRankingLoss":
        columns = {
            "anchor": [pair.question for pair in pairs],
            "positive": [pair.answer_for_model(answer_text) for pair in pairs],  # type: ignore[arg-type]
        }
        return LossSetup(losses.MultipleNegativesRankingLoss(model), columns, in_batch_negatives=True)

    left, right, labels = _pair_columns(pairs, answer_text, negatives_per_pair, seed)
    if name == "CosineSimilarityLoss":
        return LossSetup(losses.CosineSimilarityLoss(model),
                         {"sentence1": left, "sentence2": right, "score": labels}, in_batch_negatives=False)
    label_ints = [int(label) for label in labels]
    if name == "ContrastiveLoss":
        loss: nn.Module = losses.ContrastiveLoss(model)
    elif name == "OnlineContrastiveLoss":
        loss = losses.OnlineContrastiveLoss(model)
    else:
        raise ValueError(f"unknown loss {name!r}")
    return LossSetup(loss, {"sentence1": left, "sentence2": right, "label": label_ints}, in_batch_negatives=False)
