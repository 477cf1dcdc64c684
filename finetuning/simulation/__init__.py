"""Click simulation: rank a BEIR corpus, show the top k, click with a position-based click model.

    >>> from finetuning.datasets import BeirDataset
    >>> from finetuning.simulation import simulate_sessions
    >>> sessions = simulate_sessions(BeirDataset.load("shared/data/scifact"), split="train")  # doctest: +SKIP

See ``click_simulator.py`` for the session format and the decisions behind it.
"""

from finetuning.simulation.bm25 import BM25Ranker
from finetuning.simulation.click_model import PositionBasedClickModel
from finetuning.simulation.click_simulator import (
    DEFAULT_META_TEMPLATE,
    HeldOutSplitError,
    check_split,
    click_statistics,
    render_meta,
    simulate_sessions,
    write_jsonl,
)
from finetuning.simulation.rankers import EmbeddingRanker, Ranker

__all__ = [
    "BM25Ranker",
    "DEFAULT_META_TEMPLATE",
    "EmbeddingRanker",
    "HeldOutSplitError",
    "PositionBasedClickModel",
    "Ranker",
    "check_split",
    "click_statistics",
    "render_meta",
    "simulate_sessions",
    "write_jsonl",
]
