"""Held-out retrieval quality of a sentence-transformers model: MRR@10, nDCG@10, Recall@k.

Built on sentence-transformers' ``InformationRetrievalEvaluator`` (the same object the trainer
runs at every evaluation step to pick the best checkpoint); :func:`plain_metrics` strips its
``{name}_cosine_`` prefixes so reports read ``{"mrr@10": …, "ndcg@10": …, "recall@5": …}``.
"""

from __future__ import annotations

from typing import Any

from finetuning.qa.data import RetrievalTargets

EVALUATOR_NAME = "held_out"
SCORE_FUNCTION = "cosine"


def build_evaluator(targets: RetrievalTargets, recall_at_k: list[int], batch_size: int = 32) -> Any:
    """An IR evaluator over ``targets`` scored with cosine similarity."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    return InformationRetrievalEvaluator(
        queries=targets.queries,
        corpus=targets.corpus,
        relevant_docs=targets.relevant,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=sorted(set(recall_at_k) | {10}),
        map_at_k=[100],
        batch_size=batch_size,
        name=EVALUATOR_NAME,
        write_csv=False,
        score_functions={SCORE_FUNCTION: cos_sim},
        main_score_function=SCORE_FUNCTION,
    )


def metric_key(metric: str) -> str:
    """The trainer's key of ``metric`` (e.g. ``mrr@10`` → ``eval_held_out_cosine_mrr@10``)."""
    return f"eval_{EVALUATOR_NAME}_{SCORE_FUNCTION}_{metric}"


def plain_metrics(raw: dict[str, float]) -> dict[str, float]:
    """``{"held_out_cosine_mrr@10": x, "eval_held_out_cosine_recall@5": y}`` → ``{"mrr@10": x, "recall@5": y}``."""
    out: dict[str, float] = {}
    for key, value in raw.items():
        for prefix in (f"eval_{EVALUATOR_NAME}_{SCORE_FUNCTION}_", f"{EVALUATOR_NAME}_{SCORE_FUNCTION}_"):
            if key.startswith(prefix):
                out[key[len(prefix):]] = float(value)
                break
    return out


def evaluate_model(model: Any, evaluator: Any) -> dict[str, float]:
    """Run ``evaluator`` on ``model`` and return the plain metric names."""
    return plain_metrics(evaluator(model))
