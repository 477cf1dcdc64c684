"""How well the engine's click model tells relevant clicks from noise, per simulated user, without training.

    python bench/click_relevance.py --datasets ../shared/data/scifact ../shared/data/nfcorpus [--seeds 0 1 2]
        [--click-models pbm dbn trust-bias misleading] [--popularity uniform zipf] [--max-train-queries 120]
        [--rank-rate-strength 20] [--compare per_rank|dwell|reported_dwell] [--dwell-medians 60 12]

For each data set × simulated user × popularity × seed: BM25 ranks the corpus for the train
queries (the suite's subsample rule: ``random.Random(seed).sample`` of the train queries), the top
10 are shown, the simulated user clicks (``finetuning.simulation``), and two
:class:`~finetuning.click_relevance.ClickRelevanceModel` fits are scored against the train qrels:
the baseline (one click rate per class, the PBM, dwell ignored) and the candidate: per-rank click
rates (``--compare per_rank``, ``--rank-rate-strength``), or, with ``--compare dwell``, the
engine's default model reading dwell times from sessions simulated with a
:class:`~finetuning.simulation.dwell.DwellTimeModel` (the baseline sees the same sessions; with
``--compare reported_dwell`` every click's dwell is in its event, else only the timestamps tell;
``--dwell-medians`` sets how long users stay on relevant and irrelevant results). Per fit:

- ``noise_share``: the share of the clicked results' total positive weight, P(relevant), that sits
  on irrelevant results (what the loss learns from noise);
- ``relevant_kept``: the mean P(relevant) of clicks on relevant results;
- ``auc``: how well P(relevant) orders all shown (query, result) pairs by their true relevance;
- ``false_negative_weight``: the summed negative weight, 1 − P(relevant), that the loss puts on
  relevant results skipped above a click.

Prints one JSON line per cell and a last ``{"stage": "summary", ...}`` line with the means of both
fits. BM25 instead of the embedding model keeps it to seconds a cell; test queries are never read.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetuning.click_relevance import ClickRelevanceModel  # noqa: E402
from finetuning.datasets.beir import BeirDataset  # noqa: E402
from finetuning.inputs.converter import sessions_to_inputs  # noqa: E402
from finetuning.simulation import BM25Ranker, DwellTimeModel, make_click_model, make_popularity, simulate_sessions  # noqa: E402

METRICS = ("noise_share", "relevant_kept", "auc", "false_negative_weight")


def score_fit(model: ClickRelevanceModel, inputs: list, truth: dict[str, dict[str, int]]) -> dict[str, float]:
    """The figures above for one fitted model; ``truth`` maps query text → {doc id: grade}."""
    by_query: dict[str, list] = defaultdict(list)
    for item in inputs:
        by_query[str(item.query)].append(item)
    scores, labels = [], []
    noise = relevant = false_negative = 0.0
    relevant_clicks = 0
    for query, sessions in by_query.items():
        posterior, judged = model.relevance(sessions), truth[query]
        for object_id, p in posterior.items():
            scores.append(p)
            labels.append(judged.get(object_id, 0) > 0)
        for item in sessions:
            clicked = set(item.clicked_ids)
            last_click = max((item.rank(o) for o in clicked), default=0)
            for object_id in item.results:
                is_relevant = judged.get(object_id, 0) > 0
                if object_id in clicked:
                    if is_relevant:
                        relevant += posterior[object_id]
                        relevant_clicks += 1
                    else:
                        noise += posterior[object_id]
                elif is_relevant and item.rank(object_id) < last_click:
                    false_negative += 1.0 - posterior[object_id]
    return {"noise_share": noise / max(noise + relevant, 1e-12), "relevant_kept": relevant / max(relevant_clicks, 1),
            "auc": float(roc_auc_score(labels, scores)) if 0 < sum(labels) < len(labels) else float("nan"),
            "false_negative_weight": false_negative}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", required=True, type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--click-models", nargs="+", default=["pbm", "dbn", "trust-bias", "misleading"])
    parser.add_argument("--popularity", nargs="+", default=["uniform", "zipf"], choices=["uniform", "zipf"])
    parser.add_argument("--sessions-per-query", type=int, default=10)
    parser.add_argument("--max-train-queries", type=int, default=120)
    parser.add_argument("--rank-rate-strength", type=float, default=20.0, help="the candidate's ClickRelevanceModel(rank_rate_strength=…)")
    parser.add_argument("--compare", default="per_rank", choices=["per_rank", "dwell", "reported_dwell"], help="the candidate fit (module docstring)")
    parser.add_argument("--dwell-medians", nargs=2, type=float, default=[60.0, 12.0], metavar=("RELEVANT", "IRRELEVANT"),
                        help="median seconds on a relevant and on an irrelevant result of the simulated dwell (--compare dwell|reported_dwell)")
    args = parser.parse_args(argv)
    relevant_median, irrelevant_median = args.dwell_medians
    dwell = (DwellTimeModel(relevant_median=relevant_median, irrelevant_median=irrelevant_median, reported=args.compare == "reported_dwell")
             if "dwell" in args.compare else None)
    candidate = (lambda: ClickRelevanceModel(rank_rate_strength=args.rank_rate_strength)) if dwell is None else ClickRelevanceModel

    cells = []
    for directory in args.datasets:
        dataset = BeirDataset.load(directory)
        ranker = BM25Ranker({doc_id: dataset.doc_text(doc_id) for doc_id in dataset.doc_ids})
        qrels = dataset.qrels("train")
        for seed in args.seeds:
            train = dataset.training_query_ids()
            train = sorted(random.Random(seed).sample(train, min(args.max_train_queries, len(train))))
            truth = {dataset.queries[q]: qrels[q] for q in train}
            for click_model in args.click_models:
                for popularity in args.popularity:
                    zipf = make_popularity("zipf") if popularity == "zipf" else None
                    sessions = simulate_sessions(dataset, split="train", ranker=ranker, top_k=10, seed=seed, query_ids=train,
                                                 sessions_per_query=1 if zipf else args.sessions_per_query,
                                                 click_model=make_click_model(click_model, seed=seed), popularity=zipf, dwell=dwell)
                    inputs = sessions_to_inputs(sessions)
                    cell = {"stage": "cell", "dataset": dataset.name, "click_model": click_model, "popularity": popularity, "seed": seed,
                            "sessions": len(inputs),
                            "baseline": score_fit(ClickRelevanceModel(satisfied_dwell_seconds=None).fit(inputs), inputs, truth),
                            args.compare: score_fit(candidate().fit(inputs), inputs, truth)}
                    print(json.dumps(cell), flush=True)
                    cells.append(cell)
    summary = {"stage": "summary", "cells": len(cells), "compare": args.compare, "rank_rate_strength": args.rank_rate_strength,
               **({"dwell": dwell.params()} if dwell else {}),
               **{f"{fit}_{metric}": statistics.fmean(c[fit][metric] for c in cells) for fit in ("baseline", args.compare) for metric in METRICS}}
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
