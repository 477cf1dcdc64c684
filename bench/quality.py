"""Quality benchmark: fine-tuning on simulated clicks vs sentence-transformers MNRL on gold pairs.

    python bench/quality.py --dataset ../shared/data/scifact [--max-docs N] [--max-train-queries N]
                            [--max-test-queries N] [--sessions-per-query 10] [--epochs 1] [--batch-size 32]

Works on any BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/train.tsv, qrels/test.tsv).
1. Encode the corpus with the base model (cached under bench/.cache/, keyed by data set, corpus
   ids, model and max length) and score the **test** queries: nDCG@10, Recall@100, MRR@10.
2. Simulate search sessions for **train** queries only: the base model is the search engine, the
   top 10 are shown, a position-based click model clicks (``finetuning.simulation``; another
   simulated user with ``--click-model``), 10 sessions per query by default (a click log sees a
   popular query many times; ``--popularity zipf`` for a long tail of queries seen once;
   ``--dwell timestamps|reported`` for a log that tells how long users stayed on what they clicked).
3. Fine-tune the base model with ``finetuning.train.fine_tune`` on those sessions (the fine-tuning
   task's default ``test_size``, 20 %, of the train queries' sessions held out for validation,
   best-weights selection and the quality gate, validated four times per epoch) with the
   engine's default learning rate (``--ours-lr`` to change it); re-encode the corpus and score the
   test queries. (``--skip-ours``: the gold baseline alone.)
4. In the same run, fine-tune the base model with sentence-transformers MultipleNegativesRankingLoss
   on the gold (query, relevant document) train pairs, same epochs and batch size, learning rate
   ``--lr`` (2e-5, the issue's reference); score it the same way. (Shrinking gold's batches by the
   engine's small-log rule was measured and dropped: docs/engine.md.)
Prints JSON lines (``stage`` = base / ours / gold / summary); the summary has
``gain_ratio = (ours - base) / (gold - base)`` on test nDCG@10.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402

from dao.task_documents import FineTuningOptions  # noqa: E402
from finetuning.callbacks import KeepBestWeights  # noqa: E402
from finetuning.datasets.beir import BeirDataset  # noqa: E402
from finetuning.inputs import ItemsSet, TrainTestSplitter, sessions_to_inputs  # noqa: E402
from finetuning.keeper_verdict import START_KEPT  # noqa: E402
from finetuning.metrics.retrieval import retrieval_metrics, top_k_ids  # noqa: E402
from finetuning.models.registry import base_model_path  # noqa: E402
from finetuning.models.text import TextEmbeddingsModel  # noqa: E402
from finetuning.params import FineTuningParams, FineTuningSettings  # noqa: E402
from finetuning.simulation.click_simulator import simulate_sessions  # noqa: E402
from finetuning.simulation.registry import CLICK_MODELS, DWELL_OBSERVATIONS, make_click_model, make_dwell, make_popularity  # noqa: E402
from finetuning.simulation.rankers import EmbeddingRanker  # noqa: E402
from finetuning.tracking.in_memory import InMemoryTracker  # noqa: E402
from finetuning.train import fine_tune  # noqa: E402

CACHE = REPO / "bench" / ".cache"


def rss_mb() -> dict[str, float]:
    """This process's resident memory now and its peak so far, in MiB (Linux)."""
    import resource

    with open("/proc/self/statm") as statm:
        current = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return {"rss_mb": round(current), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc keeps it otherwise), so a stage's
    peak is not stacked on memory an earlier stage freed but the allocator kept."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def emit(record: dict) -> None:
    print(json.dumps(record, default=float), flush=True)


def load_base(model_name: str, max_seq_length: int | None) -> TextEmbeddingsModel:
    return TextEmbeddingsModel.from_pretrained(base_model_path(model_name), max_seq_length=max_seq_length)


def cache_path(dataset: BeirDataset, doc_ids: list[str], model_name: str, max_seq_length: int | None) -> Path:
    key = hashlib.sha256("\x1f".join([dataset.name, model_name, str(max_seq_length), *doc_ids]).encode()).hexdigest()[:16]
    return CACHE / f"{dataset.name}-{key}.pt"


def encode_corpus(model: TextEmbeddingsModel, texts: list[str], batch_size: int = 64, cache: Path | None = None) -> torch.Tensor:
    """Corpus embeddings; read from / written to ``cache`` when given (only for an unchanged model)."""
    if cache is not None and cache.exists():
        return torch.load(cache, weights_only=True)
    # sorting by length keeps padding (and time) down
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embeddings = model.encode_items([texts[i] for i in order], batch_size=batch_size)
    out = torch.empty_like(embeddings)
    out[torch.tensor(order)] = embeddings
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, cache)
    return out


def simulate_click_inputs(
    dataset: BeirDataset,
    model_name: str,
    max_seq_length: int | None,
    query_ids: list[str],
    top_k: int = 10,
    sessions_per_query: int = 10,
    seed: int = 0,
    base: TextEmbeddingsModel | None = None,
    base_docs: torch.Tensor | None = None,
    click_model: str = "pbm",
    popularity: str = "uniform",
    dwell: str = "none",
    dwell_medians: tuple[float, float] = (60.0, 12.0),
    randomize_share: float = 0.0,
) -> list:
    """Simulated search sessions (as ``FineTuningInput``) of the train queries ``query_ids``: the
    base model ranks the corpus (its embeddings from the cache when ``base_docs`` is not given),
    the top ``top_k`` are shown and the simulated user ``click_model`` clicks (``finetuning.simulation``
    registry; position-based by default), ``sessions_per_query`` sessions a query or, with
    ``popularity="zipf"``, a Zipf-law count per query; ``dwell`` is what the log tells of how long
    users stayed on clicked results (``finetuning.simulation.DWELL_OBSERVATIONS``), with median
    dwell ``dwell_medians`` (relevant, irrelevant) seconds; ``randomize_share`` of the sessions show
    the top k in a random order (exploration, ``search_meta.randomized``)."""
    doc_ids = dataset.doc_ids
    if base is None:
        base = load_base(model_name, max_seq_length)
    if base_docs is None:
        texts = [dataset.doc_text(d) for d in doc_ids]
        base_docs = encode_corpus(base, texts, cache=cache_path(dataset, doc_ids, model_name, base.max_seq_length))
    engine = EmbeddingRanker(base, doc_ids=doc_ids, doc_embeddings=base_docs, name=f"{model_name}-base")
    zipf = make_popularity("zipf") if popularity == "zipf" else None
    sessions = simulate_sessions(dataset, split="train", ranker=engine, top_k=top_k, sessions_per_query=1 if zipf else sessions_per_query,
                                 seed=seed, query_ids=query_ids, click_model=make_click_model(click_model, seed=seed), popularity=zipf,
                                 dwell=make_dwell(dwell, relevant_median=dwell_medians[0], irrelevant_median=dwell_medians[1]),
                                 randomize_share=randomize_share)
    return sessions_to_inputs(sessions)


def evaluate(model: TextEmbeddingsModel, dataset: BeirDataset, query_ids: list[str], doc_ids: list[str], doc_embeddings: torch.Tensor) -> dict[str, float]:
    qrels = dataset.qrels("test")
    queries = model.encode_queries([dataset.queries[q] for q in query_ids])
    ranked = top_k_ids(queries, doc_embeddings, doc_ids, k=100)
    metrics = retrieval_metrics(ranked, [qrels[q] for q in query_ids], ks=(10, 100))
    return {"ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"], "mrr@10": metrics["mrr@10"]}


def train_gold_mnrl(model: TextEmbeddingsModel, dataset: BeirDataset, train_query_ids: list[str], epochs: int, batch_size: int, lr: float, seed: int) -> dict:
    """sentence-transformers MNRL on the gold (query, relevant doc) train pairs; returns timing."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    qrels = dataset.qrels("train")
    anchors, positives = [], []
    for q in train_query_ids:
        for doc, score in qrels[q].items():
            if score > 0:
                anchors.append(dataset.queries[q])
                positives.append(dataset.doc_text(doc))
    st = model.query_model
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            save_strategy="no",
            report_to=[],
            logging_steps=1000,
            seed=seed,
            batch_sampler="no_duplicates",
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(
            model=st, args=args, train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}),
            loss=MultipleNegativesRankingLoss(st),
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"pairs": len(anchors), "batch_size": batch_size, "steps": trainer.state.global_step,
            "train_seconds": seconds, "pairs_per_s": len(anchors) * epochs / seconds}


def deploy_decision(outcome, main_metric: str) -> dict:
    """What the service would do with this run: the fine-tuning job's quality gate (paired per held-out
    query, worker/jobs/fine_tuning/quality_gate.py, its default options and judge) on the run's
    held-out figures, its judge derived from the settings' ``main_metric`` as the job derives it.
    ``gate_passed`` False means the service keeps serving the start model. The ``shared_pool_*`` /
    ``own_pool_*`` / ``rand_pool_*`` / ``both_pool_*`` fields: the same gate judged by the shared validation pool /
    each query's own shown results / the exploration sessions alone / both as one, each alone."""
    from worker.jobs.fine_tuning.quality_gate import gate_witnesses, start_kept, witness_gate

    def judged(*witnesses: str, service: bool = False) -> dict:
        if service and outcome.keeper is not None and outcome.keeper.start_kept:  # as the job: nothing to compare
            decision = start_kept(outcome.keeper, outcome.metrics_before.get(outcome.keeper.metric))
        else:
            decision = witness_gate(witnesses, outcome.metrics_before, outcome.metrics_after, outcome.held_out_per_query)
        metric = witnesses[0]
        return {"gate_metric": decision.metric or metric, "gate_passed": decision.passed, "gate_z": decision.z,
                "gate_queries": decision.n_queries, "gate_mean_difference": decision.mean_difference,
                "gate_before": decision.before, "gate_after": decision.after, "gate_reason": decision.reason}

    def other(prefix: str, metric: str) -> dict:
        return {f"{prefix}_{k.removeprefix('gate_')}": v for k, v in judged(metric).items()
                if k in ("gate_passed", "gate_z", "gate_before", "gate_after")}

    return {**judged(*gate_witnesses(None, main_metric, outcome.metrics_after), service=True),
            **other("shared_pool", "val_ndcg@10"),
            **other("own_pool", "val_own_ndcg@10"),
            **other("rand_pool", "val_rand_ndcg@10"),
            **other("both_pool", "val_both_ndcg@10")}


def per_query_curve(outcome, checks: list[tuple[int, dict[str, list[float]]]]) -> dict[str, list]:
    """Each held-out nDCG@10 judge per held-out query at the start (step 0) and at every check:
    metric → [[step, values], …], the same queries in the same order at every step."""
    curves: dict[str, list] = {}
    for metric, (before, _) in outcome.held_out_per_query.items():
        if metric.endswith("ndcg@10") and before:
            steps = [[step, values[metric]] for step, values in checks if len(values.get(metric, ())) == len(before)]
            curves[metric] = [[0, list(before)], *steps]
    return curves


class LastWeightsScorer(pl.Callback):
    """Diagnostic: scores the weights as training left them (before the best-weights keeper
    restores) and, with ``each_check``, after every validation too (``curve``: (step, scores)).
    Test queries are only scored here, never used to choose anything."""

    def __init__(self, score, each_check: bool = False) -> None:
        self.score = score
        self.each_check = each_check
        self.scores: dict[str, float] = {}
        self.curve: list[tuple[int, dict[str, float]]] = []

    def _score(self, pl_module) -> dict[str, float]:
        was_training = pl_module.training
        pl_module.eval()
        try:
            return self.score()
        finally:
            pl_module.train(was_training)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.each_check and not trainer.sanity_checking:
            self.curve.append((getattr(pl_module, "optimizer_steps", trainer.global_step), self._score(pl_module)))

    def on_train_end(self, trainer, pl_module) -> None:
        self.scores = self._score(pl_module)


class JudgeRecorder(pl.Callback):
    """Diagnostic, cheap: each held-out nDCG@10 judge per held-out query at every check
    (``per_query``: (step, metric → values), for ``bench/judge_floor.py``), the query texts those
    values belong to (``queries``: metric → texts, so that judges can be paired per query), and the
    run's best-weights keeper, whose candidate :func:`score_refused_candidate` scores on test when
    the keeper refused it."""

    def __init__(self) -> None:
        self.per_query: list[tuple[int, dict[str, list[float]]]] = []
        self.queries: dict[str, list[str]] = {}
        self.keeper: KeepBestWeights | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.keeper = next((c for c in trainer.callbacks if isinstance(c, KeepBestWeights)), None)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        values = getattr(pl_module, "last_validation_per_query", {})
        self.per_query.append((getattr(pl_module, "optimizer_steps", trainer.global_step),
                               {metric: list(v) for metric, v in values.items() if metric.endswith("ndcg@10")}))
        self.queries = {metric: list(texts) for metric, texts in getattr(pl_module, "last_validation_queries", {}).items()
                        if metric.endswith("ndcg@10")}


def score_refused_candidate(model, keeper: KeepBestWeights | None, score) -> dict | None:
    """Diagnostic: when the keeper kept the start, the test figures its best trained checkpoint would
    have scored (``score``: the test evaluation), the model left with the start weights. A refused
    gain is only visible this way; nothing here chooses anything."""
    if keeper is None or keeper.decision != START_KEPT or keeper._candidate_state is None or keeper._start_state is None:
        return None
    model.load_state_dict(keeper._candidate_state)
    try:
        return {"step": keeper.candidate_step, **score()}
    finally:
        model.load_state_dict(keeper._start_state)


def train_ours(args: argparse.Namespace, dataset: BeirDataset, test_ids: list[str], doc_ids: list[str], texts: list[str],
               train_inputs: list, val_inputs: list) -> dict[str, float]:
    """Our fine-tuning on the simulated sessions; emits the ``ours`` stage and returns its test metrics."""
    started = time.perf_counter()
    ours = load_base(args.model, args.max_seq_length)
    lr = args.ours_lr if args.ours_lr is not None else FineTuningParams().query_lr
    # the default calculators already validate the exploration judge (retrieval_randomized)
    extra_judges = ([*FineTuningSettings().metric_calculators, "retrieval_all_shown", "retrieval_all_shown_flat_prior"]
                    if args.all_shown_judge else [])
    params = FineTuningParams(query_lr=lr, items_lr=lr, temperature=args.temperature, negative_downsampling=args.negative_downsampling,
                              **({"false_negative_margin": args.false_negative_margin} if args.false_negative_margin is not None else {}))
    settings = FineTuningSettings(loss_func=args.loss, **({"confidence_calculator": args.confidence} if args.confidence else {}),
                                  **({"metric_calculators": ["distance_shift", "retrieval_own_results"], "main_metric": "val_own_ndcg@10"}
                                     if args.validation_pool == "own" else {}),
                                  **({"metric_calculators": extra_judges} if extra_judges else {}),
                                  batch_size=args.batch_size, num_epochs=args.epochs,
                                  seed=args.seed, test_each_n_sessions=args.test_each, lr_decay=args.lr_decay,
                                  **({"precision": args.precision} if args.precision else {}),
                                  **({"attention_dropout": args.attention_dropout == "on"} if args.attention_dropout else {}))
    tracker = InMemoryTracker()
    def score_test() -> dict[str, float]:
        return evaluate(ours, dataset, test_ids, doc_ids, encode_corpus(ours, texts))
    callbacks = [LastWeightsScorer(score_test, each_check=args.score_each_check)] if args.score_last or args.score_each_check else []
    recorder = JudgeRecorder()
    outcome = fine_tune(ours, train_inputs, val_inputs, ItemsSet(dict(zip(doc_ids, texts))), params, settings, tracker,
                        callbacks=[*callbacks, recorder], accelerator="auto", save_model=False)
    train_seconds = time.perf_counter() - started
    ours_metrics = score_test()
    refused = score_refused_candidate(ours, recorder.keeper, score_test) if args.score_refused else None
    emit({"stage": "ours", **rss_mb(), **ours_metrics, **deploy_decision(outcome, settings.main_metric), "lr": lr, "confidence": settings.confidence_calculator, "precision": settings.precision, "attention_dropout": settings.attention_dropout, "train_seconds": train_seconds, "steps": outcome.steps, "best_step": outcome.best_step, "selection": outcome.selection,
          **({"keeper_metric": outcome.keeper.metric,
              "keeper_z": outcome.proof.z if math.isfinite(outcome.proof.z) else None, "keeper_queries": outcome.proof.n,
              "keeper_mean_difference": outcome.proof.mean} if outcome.proof else {}),
          "val_ndcg@10_before": outcome.metrics_before.get("val_ndcg@10"), "val_ndcg@10_after": outcome.metrics_after.get("val_ndcg@10"),
          "val_ndcg@10_curve": tracker.values("val_ndcg@10"), "val_own_ndcg@10_curve": tracker.values("val_own_ndcg@10"),
          **({f"val_{name}_ndcg@10_curve": tracker.values(f"val_{name}_ndcg@10") for name in ("shown", "flat")} if args.all_shown_judge else {}),
          **({"val_rand_ndcg@10_curve": tracker.values("val_rand_ndcg@10")} if args.randomize_share else {}),
          "judged_queries": {metric: len(values[0] or []) for metric, values in outcome.held_out_per_query.items() if metric.endswith("ndcg@10")},
          **({"last_weights": callbacks[0].scores} if callbacks else {}),
          **({"test_ndcg@10_curve": [(step, scores["ndcg@10"]) for step, scores in callbacks[0].curve]} if args.score_each_check else {}),
          "per_query_curve": per_query_curve(outcome, recorder.per_query), "judge_queries": recorder.queries,
          **({"candidate_step": recorder.keeper.candidate_step,
              "candidate_per_query": {metric: values for metric, values in recorder.keeper.candidate_per_query_by_metric.items()
                                      if metric.endswith("ndcg@10")}} if recorder.keeper and recorder.keeper.candidate_step else {}),
          **({"refused_candidate": refused} if refused else {}),
          "seconds": time.perf_counter() - started})
    return ours_metrics


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--max-seq-length", type=int, default=None, help="default: the model's own")
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--max-train-queries", type=int, default=None)
    parser.add_argument("--max-test-queries", type=int, default=None)
    parser.add_argument("--sessions-per-query", type=int, default=10,
                        help="simulated sessions per train query (a click log sees popular queries many times)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--click-model", default="pbm", choices=sorted(CLICK_MODELS), help="simulated user (finetuning/simulation/registry.py)")
    parser.add_argument("--popularity", default="uniform", choices=["uniform", "zipf"],
                        help="sessions per train query: uniform (--sessions-per-query each) or zipf (ZipfPopularity's defaults)")
    parser.add_argument("--dwell", default="none", choices=DWELL_OBSERVATIONS,
                        help="what the simulated log tells of dwell time: none, timestamps (events spaced by it) or reported (also in each click)")
    parser.add_argument("--dwell-medians", nargs=2, type=float, default=[60.0, 12.0], metavar=("RELEVANT", "IRRELEVANT"),
                        help="median seconds the simulated users stay on a relevant and on an irrelevant result (how well dwell separates them)")
    parser.add_argument("--randomize-share", type=float, default=0.0,
                        help="share of simulated sessions that show the top k in a random order (exploration); adds the retrieval_randomized "
                        "judge (val_rand_ndcg@10_curve)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5, help="learning rate of the gold-pairs baseline")
    parser.add_argument("--ours-lr", type=float, default=None,
                        help="learning rate of our fine-tuning (default: FineTuningParams' default)")
    parser.add_argument("--loss", default="click_infonce")
    parser.add_argument("--confidence", default=None, help="confidence calculator (default: the engine's)")
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--negative-downsampling", type=float, default=1.0)
    parser.add_argument("--false-negative-margin", type=float, default=None,
                        help="drop in-batch negatives scored within this margin of the positive (default: the engine's)")
    parser.add_argument("--validation-share", type=float, default=FineTuningOptions().test_size,
                        help="held-out share of the train queries' sessions (default: the fine-tuning task's test_size, "
                        "so the gate columns are what the service would decide)")
    parser.add_argument("--validation-pool", default="shared", choices=["shared", "own"],
                        help="rank each held-out query against all held-out results (shared) or its own shown results")
    parser.add_argument("--test-each", type=float, default=0.25, help="validate every this share of an epoch (<=0: once per epoch)")
    parser.add_argument("--lr-decay", default="linear", choices=["linear", "none"])
    parser.add_argument("--score-last", action="store_true",
                        help="also score the last weights on the test queries (a diagnostic: costs one more corpus encoding)")
    parser.add_argument("--all-shown-judge", action="store_true",
                        help="also validate with every shown result graded by its posterior, with the prior by rank (retrieval_all_shown: "
                        "val_shown_ndcg@10_curve) and the overall prior (retrieval_all_shown_flat_prior: val_flat_ndcg@10_curve)")
    parser.add_argument("--score-refused", action=argparse.BooleanOptionalAction, default=True,
                        help="when the keeper kept the start, also score its refused best checkpoint on the test queries "
                        "(refused_candidate: what the burden of proof gave up; one more corpus encoding; a diagnostic)")
    parser.add_argument("--score-each-check", action="store_true",
                        help="also score the weights on the test queries after every validation (test_ndcg@10_curve, and each judge per held-out "
                        "query at every check, per_query_curve, which bench/judge_floor.py reads; a diagnostic of "
                        "the held-out judges: one corpus encoding a validation, never used to choose)")
    parser.add_argument("--precision", default=None, help="our training's Lightning precision, e.g. bf16-mixed (default: the engine's)")
    parser.add_argument("--attention-dropout", default=None, choices=["on", "off"], help="our training's attention dropout (default: the engine's)")
    parser.add_argument("--skip-gold", action="store_true")
    parser.add_argument("--skip-ours", action="store_true", help="only the gold baseline (e.g. to see how its gain grows with train queries)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.all_shown_judge or args.randomize_share) and args.validation_pool == "own":
        parser.error("--all-shown-judge and --randomize-share add to the default judges; they do not combine with --validation-pool own")

    torch.manual_seed(args.seed)
    dataset = BeirDataset.load(args.dataset, max_docs=args.max_docs, seed=args.seed)
    doc_ids = dataset.doc_ids
    texts = [dataset.doc_text(d) for d in doc_ids]
    test_ids = dataset.query_ids("test")[: args.max_test_queries]
    train_ids = dataset.training_query_ids()
    if args.max_train_queries:
        import random

        train_ids = sorted(random.Random(args.seed).sample(train_ids, min(args.max_train_queries, len(train_ids))))
    info = {"dataset": dataset.name, "docs": len(doc_ids), "train_queries": len(train_ids), "test_queries": len(test_ids), "model": args.model}

    # 1. base model, corpus embeddings cached
    started = time.perf_counter()
    base = load_base(args.model, args.max_seq_length)
    base_docs = encode_corpus(base, texts, cache=cache_path(dataset, doc_ids, args.model, base.max_seq_length))
    base_metrics = evaluate(base, dataset, test_ids, doc_ids, base_docs)
    emit({"stage": "base", **rss_mb(), **info, **base_metrics, "seconds": time.perf_counter() - started})

    # 2. simulated sessions for train queries only, the base model as the search engine
    started = time.perf_counter()
    inputs = simulate_click_inputs(dataset, args.model, args.max_seq_length, train_ids, top_k=args.top_k,
                                   sessions_per_query=args.sessions_per_query, seed=args.seed, base=base, base_docs=base_docs,
                                   click_model=args.click_model, popularity=args.popularity, dwell=args.dwell,
                                   dwell_medians=tuple(args.dwell_medians), randomize_share=args.randomize_share)
    train_inputs, val_inputs = TrainTestSplitter(test_size=args.validation_share, random_state=args.seed)(inputs)
    clicks = sum(len(i.clicked_ids) for i in inputs)
    emit({"stage": "simulation", **rss_mb(), "click_model": args.click_model, "popularity": args.popularity, "dwell": args.dwell,
          "dwell_medians": args.dwell_medians if args.dwell != "none" else None, "randomize_share": args.randomize_share,
          "randomized_sessions": sum(i.randomized for i in inputs), "sessions": len(inputs), "clicks": clicks, "train_sessions": len(train_inputs), "val_sessions": len(val_inputs), "seconds": time.perf_counter() - started})

    # 3. ours (its model is freed on return: nothing of it is needed for the gold baseline)
    summary = {"stage": "summary", **info, "base_ndcg@10": base_metrics["ndcg@10"]}
    if not args.skip_ours:
        ours_metrics = train_ours(args, dataset, test_ids, doc_ids, texts, train_inputs, val_inputs)
        release_memory()
        summary.update({"ours_ndcg@10": ours_metrics["ndcg@10"], "ours_gain": ours_metrics["ndcg@10"] - base_metrics["ndcg@10"],
                        "never_below_base": ours_metrics["ndcg@10"] >= base_metrics["ndcg@10"]})
    # 4. gold pairs with sentence-transformers MNRL, same model / epochs / batch / lr
    if not args.skip_gold:
        started = time.perf_counter()
        gold = load_base(args.model, args.max_seq_length)
        timing = train_gold_mnrl(gold, dataset, train_ids, args.epochs, args.batch_size, args.lr, args.seed)
        gold_metrics = evaluate(gold, dataset, test_ids, doc_ids, encode_corpus(gold, texts))
        emit({"stage": "gold", **rss_mb(), **gold_metrics, **timing, "seconds": time.perf_counter() - started})
        gold_gain = gold_metrics["ndcg@10"] - base_metrics["ndcg@10"]
        summary.update({"gold_ndcg@10": gold_metrics["ndcg@10"], "gold_gain": gold_gain,
                        **({"gain_ratio": summary["ours_gain"] / gold_gain if gold_gain != 0 else None} if "ours_gain" in summary else {})})
    summary.update(rss_mb())
    emit(summary)
    return summary


if __name__ == "__main__":
    main()
