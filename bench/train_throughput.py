"""Training cost: EmbeddingsFineTuner vs sentence-transformers, time per pair and peak memory.

    python bench/train_throughput.py --dataset ../shared/data/scifact [--pairs 320] [--batch-size 32]
                                     [--click-queries 96] [--mini-batch-size 32]

Works on any BEIR-layout folder. Three stages, **each in its own child process** (this script
re-run with ``--stage``), so that each stage's peak resident memory is that child's own
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (imports and model included, nothing left over from
another stage):

- ``st``: sentence-transformers ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss``
  on the first ``--pairs`` gold (query, relevant document) train pairs, one per query;
- ``ours``: ``fine_tune`` on the same pairs as click sessions (one shown result, clicked: the
  gold-equivalent pair), same order, batch size, learning rate and model; the ``click_infonce``
  loss on such sessions is exactly MNRL (in-batch negatives only), so both do the same work and
  ``ratio`` = ours pairs/s ÷ sentence-transformers pairs/s measures the engine's overhead
  (target >= 1);
- ``clicks``: ``fine_tune`` on simulated click sessions of ``--click-queries`` train queries (the
  simulation of bench/quality.py: the base model ranks the corpus, the top 10 are shown, a
  position-based click model clicks, 10 sessions per query) with the engine's defaults: each
  step embeds every positive and hard negative of 32 queries (~100+ documents), which is where
  gradient caching bounds memory by ``--mini-batch-size``.

``--variant SETTING=VALUE …`` runs the clicks stage a second time with those settings overrides
(e.g. ``precision=bf16-mixed attention_dropout=false``) and adds ``variant_s_per_step``,
``variant_speedup`` (default clicks s/step ÷ variant s/step, same run) and ``variant_peak_rss_mb``.

Prints one JSON line: ``ours_pairs_per_s``, ``st_pairs_per_s``, ``ratio``, ``ours_peak_rss_mb``,
``st_peak_rss_mb``, ``ours_s_per_step``, ``st_s_per_step`` and the ``clicks_*`` figures
(``--skip-clicks`` leaves that stage out). Times cover training only (model loading excluded;
ours includes ``fine_tune``'s setup around the Lightning loop).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
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


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def run_sentence_transformers(model_name, pairs, batch_size, lr, max_seq_length) -> dict:
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
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "steps": trainer.state.global_step, "pairs": len(pairs)}


class TextCounter:
    """Wraps a tower's forward to count the texts it embeds (with or without autograd)."""

    def __init__(self, forward) -> None:
        self.forward, self.texts = forward, 0

    def __call__(self, texts):
        self.texts += len(texts)
        return self.forward(texts)


def run_ours(model_name, pairs, batch_size, lr, max_seq_length, mini_batch_size) -> dict:
    model = load_base(model_name, max_seq_length)
    inputs = [
        FineTuningInput(session_id=str(i), query=q, results=[doc_id], events=[ClickEvent(object_id=doc_id)], ranks={doc_id: 1})
        for i, (q, doc_id, _) in enumerate(pairs)
    ]
    items = ItemsSet({doc_id: text for _, doc_id, text in pairs})
    params = FineTuningParams(query_lr=lr, items_lr=lr)
    # min_steps_per_epoch=0: batches of batch_size pairs, as sentence-transformers makes them (the
    # engine's small-log rule would shrink them and make it a different amount of work).
    settings = FineTuningSettings(batch_size=batch_size, num_epochs=1, metric_calculators=[], confidence_calculator="dummy",
                                  mini_batch_size=mini_batch_size, min_steps_per_epoch=0)
    started = time.perf_counter()
    outcome = fine_tune(model, inputs, [], items, params, settings, InMemoryTracker(), accelerator="auto", save_model=False)
    seconds = time.perf_counter() - started
    assert outcome.steps == -(-len(pairs) // batch_size), outcome.steps
    return {"seconds": seconds, "steps": outcome.steps, "pairs": len(pairs)}


def run_clicks(dataset_dir: Path, model_name, n_queries, batch_size, max_seq_length, mini_batch_size, seed,
               overrides: dict[str, str] | None = None) -> dict:
    from quality import simulate_click_inputs

    dataset = BeirDataset.load(dataset_dir, seed=seed)
    doc_ids = dataset.doc_ids
    texts = dict(zip(doc_ids, (dataset.doc_text(d) for d in doc_ids)))
    train_ids = [q for q in dataset.query_ids("train") if "test" not in dataset.split_of(q)][:n_queries]
    inputs = simulate_click_inputs(dataset, model_name, max_seq_length, train_ids, seed=seed)
    model = load_base(model_name, max_seq_length)
    counter = TextCounter(model.forward_items)
    model.forward_items = counter
    settings = FineTuningSettings(batch_size=batch_size, num_epochs=1, metric_calculators=[], mini_batch_size=mini_batch_size, seed=seed,
                                  **(overrides or {}))
    started = time.perf_counter()
    outcome = fine_tune(model, inputs, [], ItemsSet(texts), FineTuningParams(), settings, InMemoryTracker(),
                        accelerator="auto", save_model=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "steps": outcome.steps, "sessions": len(inputs), "queries": len(train_ids),
            "item_texts_forwarded": counter.texts}


def run_stage(args) -> dict:
    torch.manual_seed(0)
    if args.stage in ("clicks", "variant"):
        result = run_clicks(args.dataset, args.model, args.click_queries, args.batch_size, args.max_seq_length,
                            args.mini_batch_size, args.seed, overrides(args.variant) if args.stage == "variant" else None)
    else:
        pairs = gold_pairs(BeirDataset.load(args.dataset), args.pairs)
        if args.stage == "st":
            result = run_sentence_transformers(args.model, pairs, args.batch_size, args.lr, args.max_seq_length)
        else:
            result = run_ours(args.model, pairs, args.batch_size, args.lr, args.max_seq_length, args.mini_batch_size)
    return {"stage": args.stage, **result, "peak_rss_mb": peak_rss_mb()}


def overrides(pairs: list[str]) -> dict[str, str]:
    """``["precision=bf16-mixed", "attention_dropout=false"]`` → settings overrides (pydantic parses the values)."""
    return dict(pair.split("=", 1) for pair in pairs)


def child(stage: str, argv: list[str]) -> dict:
    """Run one stage in a fresh interpreter; its last stdout line is the stage's JSON."""
    done = subprocess.run([sys.executable, __file__, *argv, "--stage", stage], stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mini-batch-size", type=int, default=FineTuningSettings().mini_batch_size)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--click-queries", type=int, default=96, help="train queries of the click-simulation stage")
    parser.add_argument("--skip-clicks", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", nargs="+", default=[], metavar="SETTING=VALUE",
                        help="also run the clicks stage with these FineTuningSettings overrides (e.g. precision=bf16-mixed "
                        "attention_dropout=false) and report it beside the default clicks stage of the same run")
    parser.add_argument("--stage", choices=["st", "ours", "clicks", "variant"], help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.stage:
        result = run_stage(args)
        emit(result)
        return result

    st = child("st", argv)
    ours = child("ours", argv)
    summary = {
        "batch_size": args.batch_size, "mini_batch_size": args.mini_batch_size, "pairs": ours["pairs"],
        "ours_pairs_per_s": ours["pairs"] / ours["seconds"], "st_pairs_per_s": st["pairs"] / st["seconds"],
        "ratio": (ours["pairs"] / ours["seconds"]) / (st["pairs"] / st["seconds"]),
        "ours_peak_rss_mb": round(ours["peak_rss_mb"]), "st_peak_rss_mb": round(st["peak_rss_mb"]),
        "ours_s_per_step": ours["seconds"] / ours["steps"], "st_s_per_step": st["seconds"] / st["steps"],
    }
    if not args.skip_clicks:
        clicks = child("clicks", argv)
        steps = max(1, clicks["steps"])
        summary.update({
            "clicks_queries": clicks["queries"], "clicks_sessions": clicks["sessions"], "clicks_steps": clicks["steps"],
            "clicks_s_per_step": clicks["seconds"] / steps, "clicks_item_texts_per_step": clicks["item_texts_forwarded"] / steps,
            "clicks_peak_rss_mb": round(clicks["peak_rss_mb"]),
        })
        if args.variant:
            variant = child("variant", argv)
            summary.update({
                "variant": overrides(args.variant), "variant_steps": variant["steps"],
                "variant_s_per_step": variant["seconds"] / max(1, variant["steps"]),
                "variant_speedup": (clicks["seconds"] / steps) / (variant["seconds"] / max(1, variant["steps"])),
                "variant_peak_rss_mb": round(variant["peak_rss_mb"]),
            })
    emit(summary)
    return summary


if __name__ == "__main__":
    main()
