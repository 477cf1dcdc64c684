"""Training throughput: EmbeddingsFineTuner vs sentence-transformers on the same pairs and batch size.

    python bench/train_throughput.py --dataset ../shared/data/scifact [--pairs 320] [--batch-size 32]

Both train the same base model (all-MiniLM-L6-v2 by default, its own max length) on the same
(query, relevant document) gold train pairs, in the same order, with the same batch size and
learning rate, for one pass:
- sentence-transformers: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss``;
- ours: ``fine_tune`` with each pair as a one-result session whose result was clicked, the
  ``click_infonce`` loss (which on such sessions is exactly MNRL: in-batch negatives only).
Validation is off for ours (no held-out sessions) so only training is timed.
Prints one JSON line per system and a summary with ``ratio`` = ours pairs/s / theirs (target >= 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import emit, load_base  # noqa: E402  (sets the offline environment, repo on sys.path)

import torch  # noqa: E402

from finetuning.datasets.beir import BeirDataset  # noqa: E402
from finetuning.inputs import ClickEvent, FineTuningInput, ItemsSet  # noqa: E402
from finetuning.params import FineTuningParams, FineTuningSettings  # noqa: E402
from finetuning.tracking.in_memory import InMemoryTracker  # noqa: E402
from finetuning.train import fine_tune  # noqa: E402


def gold_pairs(dataset: BeirDataset, limit: int) -> list[tuple[str, str, str]]:
    """(query text, doc id, doc text) of the train qrels, one pair per query (no duplicate query in a batch)."""
    pairs = []
    qrels = dataset.qrels("train")
    for q in dataset.query_ids("train"):
        docs = [d for d, s in qrels[q].items() if s > 0]
        if docs:
            pairs.append((dataset.queries[q], docs[0], dataset.doc_text(docs[0])))
        if len(pairs) >= limit:
            break
    return pairs


def run_sentence_transformers(model_name, pairs, batch_size, lr, max_seq_length) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    st = load_base(model_name, max_seq_length).query_model
    data = Dataset.from_dict({"anchor": [p[0] for p in pairs], "positive": [p[2] for p in pairs]})
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, num_train_epochs=1, per_device_train_batch_size=batch_size, learning_rate=lr,
            save_strategy="no", report_to=[], logging_steps=10_000, disable_tqdm=True, dataloader_drop_last=False,
        )
        trainer = SentenceTransformerTrainer(model=st, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(st))
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started


def run_ours(model_name, pairs, batch_size, lr, max_seq_length) -> float:
    model = load_base(model_name, max_seq_length)
    inputs = [
        FineTuningInput(session_id=str(i), query=q, results=[doc_id], events=[ClickEvent(object_id=doc_id)], ranks={doc_id: 1})
        for i, (q, doc_id, _) in enumerate(pairs)
    ]
    items = ItemsSet({doc_id: text for _, doc_id, text in pairs})
    params = FineTuningParams(query_lr=lr, items_lr=lr)
    settings = FineTuningSettings(batch_size=batch_size, num_epochs=1, metric_calculators=[], confidence_calculator="dummy")
    started = time.perf_counter()
    outcome = fine_tune(model, inputs, [], items, params, settings, InMemoryTracker(), accelerator="auto", save_model=False)
    seconds = time.perf_counter() - started
    assert outcome.steps == -(-len(pairs) // batch_size), outcome.steps
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-seq-length", type=int, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pairs = gold_pairs(BeirDataset.load(args.dataset), args.pairs)
    theirs = run_sentence_transformers(args.model, pairs, args.batch_size, args.lr, args.max_seq_length)
    emit({"system": "sentence-transformers MNRL", "pairs": len(pairs), "seconds": theirs, "pairs_per_s": len(pairs) / theirs})
    ours = run_ours(args.model, pairs, args.batch_size, args.lr, args.max_seq_length)
    emit({"system": "clicktune EmbeddingsFineTuner", "pairs": len(pairs), "seconds": ours, "pairs_per_s": len(pairs) / ours})
    summary = {"stage": "summary", "batch_size": args.batch_size, "pairs": len(pairs), "ours_pairs_per_s": len(pairs) / ours,
               "theirs_pairs_per_s": len(pairs) / theirs, "ratio": theirs / ours}
    emit(summary)
    return summary


if __name__ == "__main__":
    main()
