"""Quality suite: ``bench/quality.py`` over a grid of data sets × simulated users × query popularity × seeds.

    python bench/quality_suite.py --datasets ../shared/data/scifact ../shared/data/nfcorpus [--seeds 0 1 2]
        [--click-models pbm dbn trust-bias misleading] [--popularity uniform zipf] [--sessions-per-query 10]
        [--max-train-queries 120] [--randomize-share 0.2] [--max-docs N] [--max-test-queries N] [--out bench/out/quality_suite.md]
        [--plan] [--resume] [-- any other bench/quality.py option for our fine-tuning, e.g. --ours-lr 3e-5]

Every cell is one run of ``bench/quality.py`` (its own process: bounded memory, a crash fails one
cell) with ``--click-model`` and ``--popularity``: sessions are simulated for **train** queries
only, the base model is the search engine, our fine-tuning trains on the sessions, and the
**test** queries of the data set score base, ours and gold (nDCG@10 on the full corpus unless
``--max-docs``). ``gain_ratio = (ours - base) / (gold - base)``.

The gold baseline (sentence-transformers MNRL on the gold train pairs of the same train queries)
does not depend on the simulated user: it is computed once per data set and seed — in the first
cell of that data set and seed — cached under ``bench/.cache/gold/`` and shared by all its cells
(later cells run with ``--skip-gold``). The cache key holds the data set files (size, mtime), the
options that change gold (model, max length, sizes, epochs, batch size, lr, seed) and the source
of ``train_gold_mnrl``, ``evaluate``, ``encode_corpus`` and ``load_base`` in ``bench/quality.py``;
each cell checks that its base run (nDCG@10, train/test query and document counts) matches the
one the cached gold was made beside, and flags ``gold_mismatch`` otherwise. ``bench/quality.py`` caches the
base model's corpus embeddings per data set and model.

Train-query subsampling (one rule, the same for ours and gold, since both train in the same
``bench/quality.py`` run): ``--max-train-queries N`` keeps ``N`` of the train queries not judged
in the test split, drawn with ``random.Random(seed).sample`` (the data set's train query ids in
file order) — the whole train split when it has at most ``N``. Test queries are only scored.

Output: one JSON line per cell on stdout (``"stage": "cell"``), then
``{"stage": "suite", "cells", "median_gain_ratio", "min_gain_ratio", "below_base", "minutes", ...}``;
a markdown table at ``--out`` and the cell lines beside it (``.jsonl``, read back by ``--resume``
to skip cells already run with the same options); each cell's own output in ``<out>-logs/``.
``--plan`` prints the grid and its estimated cost without running anything.

The simulated search service explores: ``--randomize-share`` (default 0.2) of its sessions show
the top k in a random order (``search_meta.randomized``), as clicktune asks of a service so that
held-out exploration sessions can judge a model without the start model's order in their labels
(docs/clickstream.md); ``--randomize-share 0`` is a service that never explores.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
QUALITY = REPO / "bench" / "quality.py"
CACHE = REPO / "bench" / ".cache"  # the folder bench/quality.py caches in (gitignored)
DEFAULT_OUT = REPO / "bench" / "out" / "quality_suite.md"
DEFAULT_CLICK_MODELS = ["pbm", "dbn", "trust-bias", "misleading"]
DEFAULT_POPULARITY = ["uniform", "zipf"]
DEFAULT_MAX_TRAIN_QUERIES = 120
BEIR_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv")

# Cost model of --plan, from a measured bench/quality.py run on SciFact (2 CPU cores, all-MiniLM-L6-v2,
# recomputed attention, mini_batch_size 32; docs/engine.md): our fine-tuning took 1,192 s for 7,270
# training sessions (six validations included); gold MNRL 198 s for 917 pairs; re-encoding 5,183
# documents and 300 queries ~170 s. Process start, model load, test-query encoding and simulation:
# about a minute per cell. On a loaded machine everything takes several times longer.
SECONDS_PER_DOC = 0.035
SECONDS_PER_SESSION = 0.165
SECONDS_PER_GOLD_PAIR = 0.22
SECONDS_PER_CELL = 60.0
GOLD_CHECKED = ("ndcg@10", "train_queries", "test_queries", "docs")  # a cached gold must match the cell's base
ZIPF_MEAN_SESSIONS = 7.7  # ZipfPopularity() defaults: exponent 1.5, at most 100 sessions


@dataclass(frozen=True)
class Cell:
    dataset: Path
    click_model: str
    popularity: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.dataset.name}-{self.click_model}-{self.popularity}-s{self.seed}"


def emit(record: dict) -> None:
    print(json.dumps(record, default=float), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_beir(directory: Path) -> None:
    missing = [name for name in BEIR_FILES if not (directory / name).is_file()]
    if missing:
        raise SystemExit(f"{directory}: not a BEIR-layout folder (missing {', '.join(missing)})")


def dataset_stats(directory: Path) -> dict[str, Any]:
    """Counts the plan needs: documents, train queries not judged in test, gold pairs, test queries."""
    from finetuning.datasets.beir import BeirDataset

    data = BeirDataset.load(directory)
    train = data.training_query_ids()
    pairs = sum(sum(score > 0 for score in data.qrels("train")[q].values()) for q in train)
    return {"docs": len(data.corpus), "train_queries": len(train), "gold_pairs": pairs, "test_queries": len(data.query_ids("test"))}


def estimate_seconds(stats: dict[str, Any], args: argparse.Namespace, popularity: str) -> tuple[float, float]:
    """(one cell's seconds, the gold baseline's extra seconds) by the cost model above."""
    queries = min(stats["train_queries"], args.max_train_queries or stats["train_queries"])
    docs = min(stats["docs"], args.max_docs or stats["docs"])
    sessions = queries * (args.sessions_per_query if popularity == "uniform" else ZIPF_MEAN_SESSIONS) * args.epochs
    cell = SECONDS_PER_CELL + SECONDS_PER_SESSION * sessions + SECONDS_PER_DOC * docs
    pairs = stats["gold_pairs"] * queries / max(stats["train_queries"], 1) * args.epochs
    return cell, SECONDS_PER_GOLD_PAIR * pairs + SECONDS_PER_DOC * docs


def _quality_source(*names: str) -> str:
    """Source of the named top-level functions of bench/quality.py (read, not imported)."""
    text = QUALITY.read_text(encoding="utf-8")
    tree = ast.parse(text)
    return "\n".join(ast.get_source_segment(text, node) or "" for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names)


def _files_fingerprint(directory: Path) -> list[Any]:
    return [[name, (directory / name).stat().st_size, int((directory / name).stat().st_mtime)] for name in BEIR_FILES]


def gold_key(dataset: Path, seed: int, args: argparse.Namespace) -> str:
    try:
        from importlib.metadata import version

        st_version = version("sentence-transformers")
    except Exception:  # noqa: BLE001 - only part of a cache key
        st_version = "?"
    key = {
        "dataset": str(dataset.resolve()),
        "files": _files_fingerprint(dataset),
        "seed": seed,
        "model": args.model,
        "max_seq_length": args.max_seq_length,
        "max_docs": args.max_docs,
        "max_train_queries": args.max_train_queries,
        "max_test_queries": args.max_test_queries,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "code": hashlib.sha256(_quality_source("train_gold_mnrl", "evaluate", "encode_corpus", "load_base").encode()).hexdigest(),
        "sentence_transformers": st_version,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cell_key(cell: Cell, args: argparse.Namespace, extra: list[str]) -> str:
    """Identifies a cell's configuration (for --resume); the engine's code is not part of it."""
    key = [str(cell.dataset.resolve()), cell.click_model, cell.popularity, cell.seed, args.sessions_per_query, args.model,
           args.max_seq_length, args.max_docs, args.max_train_queries, args.max_test_queries, args.epochs, args.batch_size,
           args.lr, args.randomize_share, extra]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def quality_command(cell: Cell, args: argparse.Namespace, extra: list[str], skip_gold: bool) -> list[str]:
    command = [sys.executable, str(QUALITY), "--dataset", str(cell.dataset), "--seed", str(cell.seed),
               "--click-model", cell.click_model, "--popularity", cell.popularity,
               "--sessions-per-query", str(args.sessions_per_query), "--model", args.model,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--randomize-share", str(args.randomize_share)]
    for option, value in (("--max-seq-length", args.max_seq_length), ("--max-docs", args.max_docs),
                          ("--max-train-queries", args.max_train_queries), ("--max-test-queries", args.max_test_queries)):
        if value is not None:
            command += [option, str(value)]
    if skip_gold:
        command.append("--skip-gold")
    return command + extra


def run_quality(command: list[str], log_file: Path, timeout: float | None) -> dict[str, dict]:
    """Run one bench/quality.py process; returns its JSON lines by stage (its output goes to ``log_file``)."""
    stages: dict[str, dict] = {}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w", encoding="utf-8") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=handle, text=True, cwd=REPO, env=os.environ.copy())
        started = time.monotonic()
        assert process.stdout is not None
        for line in process.stdout:
            handle.write(line)
            handle.flush()
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "stage" in record:
                stages[record["stage"]] = record
                shown = {k: record[k] for k in ("ndcg@10", "sessions", "clicks", "steps", "selection", "seconds") if k in record}
                log(f"  {record['stage']}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
            if timeout is not None and time.monotonic() - started > timeout:
                process.kill()
                break
        code = process.wait()
    if code != 0:
        stages["error"] = {"returncode": code}
    return stages


def cell_record(cell: Cell, stages: dict[str, dict], gold: dict | None, minutes: float, key: str) -> dict:
    base = stages.get("base", {}).get("ndcg@10")
    ours = stages.get("ours", {}).get("ndcg@10")
    record: dict[str, Any] = {
        "stage": "cell", "dataset": cell.dataset.name, "click_model": cell.click_model, "popularity": cell.popularity,
        "seed": cell.seed, "key": key, "minutes": round(minutes, 2),
    }
    if base is None or ours is None:
        return {**record, "failed": True, "log_stages": sorted(stages)}
    simulation, ours_stage = stages.get("simulation", {}), stages["ours"]
    record.update({
        "train_queries": stages["base"].get("train_queries"), "test_queries": stages["base"].get("test_queries"),
        "docs": stages["base"].get("docs"), "sessions": simulation.get("sessions"), "clicks": simulation.get("clicks"),
        "base_ndcg@10": base, "ours_ndcg@10": ours, "ours_gain": ours - base, "below_base": ours < base,
        "steps": ours_stage.get("steps"), "best_step": ours_stage.get("best_step"), "selection": ours_stage.get("selection"),
        "keeper_z": ours_stage.get("keeper_z"), "keeper_queries": ours_stage.get("keeper_queries"),
        **({"refused_gain": ours_stage["refused_candidate"]["ndcg@10"] - base} if ours_stage.get("refused_candidate") else {}),
        "ours_recall@100": ours_stage.get("recall@100"), "ours_mrr@10": ours_stage.get("mrr@10"),
    })
    if "gate_passed" in ours_stage:
        # what the service would serve: the trained model only when its quality gate passes
        deployed = ours if ours_stage["gate_passed"] else base
        record.update({"gate_passed": ours_stage["gate_passed"], "gate_z": ours_stage.get("gate_z"),
                       "gate_queries": ours_stage.get("gate_queries"), "judge": ours_stage.get("gate_metric"),
                       "deployed_ndcg@10": deployed,
                       "deployed_gain": deployed - base, "deployed_below_base": deployed < base})
    if gold is not None:
        add_gold(record, gold)
    return record


def add_gold(record: dict, gold: dict) -> None:
    """The gold baseline's figures and the ratios to it. A ratio to a gold baseline that did not beat
    the base model says nothing (its sign flips): such cells carry gold_gain and no ratio, and count
    as ``gold_not_above_base`` in the summary."""
    gold_gain = gold["ndcg@10"] - record["base_ndcg@10"]
    record.update({"gold_ndcg@10": gold["ndcg@10"], "gold_gain": gold_gain,
                   "gain_ratio": record["ours_gain"] / gold_gain if gold_gain > 0 else None})
    if "deployed_gain" in record:
        record["deployed_gain_ratio"] = record["deployed_gain"] / gold_gain if gold_gain > 0 else None


def staged_records(path: Path) -> list[dict]:
    """The JSON objects with a ``stage`` among the lines of ``path`` (none when it does not exist)."""
    records: list[dict] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "stage" in record:
                records.append(record)
    return records


def stages_from_log(path: Path) -> dict[str, dict]:
    """The JSON lines of a cell's log by stage (empty when there is no log)."""
    return {record["stage"]: record for record in staged_records(path)}


def summary(records: list[dict], minutes: float) -> dict:
    done = [r for r in records if not r.get("failed")]
    ratios = [r["gain_ratio"] for r in done if r.get("gain_ratio") is not None]
    zipf = [r["gain_ratio"] for r in done if r.get("gain_ratio") is not None and r["popularity"] == "zipf"]
    return {
        "stage": "suite", "cells": len(records),
        "median_gain_ratio": statistics.median(ratios) if ratios else None,
        "min_gain_ratio": min(ratios) if ratios else None,
        "below_base": sum(bool(r.get("below_base")) for r in done),
        "minutes": round(minutes, 1),
        "failed": len(records) - len(done),
        "min_gain_ratio_zipf": min(zipf) if zipf else None,
        "mean_ours_gain": statistics.fmean(r["ours_gain"] for r in done) if done else None,
        "gold_not_above_base": sum(r.get("gold_gain") is not None and r["gold_gain"] <= 0 for r in done),
        "ours_above_gold": sum(r.get("gold_ndcg@10") is not None and r["ours_ndcg@10"] >= r["gold_ndcg@10"] for r in done),
        **_deployed_summary(done),
    }


def _deployed_summary(done: list[dict]) -> dict:
    """The same figures for what the service would serve (the gate applied), over cells that record it."""
    gated = [r for r in done if "gate_passed" in r]
    if not gated:
        return {}
    ratios = [r["deployed_gain_ratio"] for r in gated if r.get("deployed_gain_ratio") is not None]
    return {"deployed_cells": len(gated), "deployed_passed": sum(bool(r["gate_passed"]) for r in gated),
            "judged_by_exploration": sum(_judge(r) == "rand" for r in gated),
            "deployed_below_base": sum(bool(r["deployed_below_base"]) for r in gated),
            "deployed_median_gain_ratio": statistics.median(ratios) if ratios else None,
            "deployed_mean_gain": statistics.fmean(r["deployed_gain"] for r in gated)}


def _fmt(value: Any, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``; "–" for a missing one."""
    return "–" if value is None else format(value, spec)


def _ratio(record: dict) -> str:
    if record.get("gain_ratio") is None and record.get("gold_gain") is not None and record["gold_gain"] <= 0:
        return "n/a (gold ≤ base)"
    return _fmt(record.get("gain_ratio"), ".2f")


def _judge(record: dict) -> str:
    """The held-out figure that judged, in short: ``both`` (the two judges below as one), ``rand`` (exploration sessions), ``own``
    (each query's own shown results), ``shared`` (the shared pool); empty when not recorded."""
    metric = record.get("judge") or ""
    return next((short for prefix, short in (("val_both_", "both"), ("val_rand_", "rand"), ("val_own_", "own"), ("val_", "shared"))
                 if metric.startswith(prefix)), metric)


def _selection(record: dict) -> str:
    """The keeper's decision, with its paired test of the best trained checkpoint when it made one."""
    selection = record.get("selection") or ""
    if record.get("keeper_queries"):
        z = record.get("keeper_z")
        selection += f" ({'∞' if z is None else format(z, '.1f')}, {record['keeper_queries']} q)"
    if record.get("refused_gain") is not None:
        selection += f"; refused checkpoint {record['refused_gain']:+.4f} on test"
    return selection


def _gate(record: dict) -> str:
    if "gate_passed" not in record:
        return "–"
    z = record.get("gate_z")
    judge = f"; {_judge(record)}, {record.get('gate_queries')} q" if record.get("judge") else ""
    return f"{'deploy' if record['gate_passed'] else 'keep start'} ({'∞' if z is None else format(z, '.1f')}{judge})"


def markdown(records: list[dict], total: dict | None, args: argparse.Namespace, extra: list[str]) -> str:
    lines = [
        "# Quality suite",
        "",
        f"`bench/quality_suite.py` — data sets: {', '.join(str(d) for d in args.datasets)}; seeds {args.seeds}; "
        f"uniform = {args.sessions_per_query} sessions per train query, zipf = ZipfPopularity() (41 % of queries seen once); "
        f"max train queries {args.max_train_queries or 'all'}; max docs {args.max_docs or 'all'}; epochs {args.epochs}; "
        f"batch {args.batch_size}; gold lr {args.lr}; sessions in a random order (exploration) {args.randomize_share:.0%}" + (f"; ours: `{' '.join(extra)}`" if extra else "") + ".",
        "",
        "| data set | users | popularity | seed | train q | sessions | clicks | base nDCG@10 | ours | gold | ours gain | gold gain | gain_ratio | below base | selection | gate (z; judge, queries) | deployed gain | min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("failed"):
            lines.append(f"| {r['dataset']} | {r['click_model']} | {r['popularity']} | {r['seed']} | failed (see logs) |||||||||||||| {r['minutes']:.1f} |")
            continue
        lines.append(
            f"| {r['dataset']} | {r['click_model']} | {r['popularity']} | {r['seed']} | {r.get('train_queries')} | {r.get('sessions')} | "
            f"{r.get('clicks')} | {r['base_ndcg@10']:.4f} | {r['ours_ndcg@10']:.4f} | {_fmt(r.get('gold_ndcg@10'))} | "
            f"{r['ours_gain']:+.4f} | {_fmt(r.get('gold_gain'), '+.4f')} | {_ratio(r)} | "
            f"{'**yes**' if r['below_base'] else ''} | "
            f"{_selection(r)} | {_gate(r)} | {_fmt(r.get('deployed_gain'), '+.4f')} | {r['minutes']:.1f} |"
        )
    if total is not None:
        lines += ["", f"**{total['cells']} cells**: median gain_ratio {_fmt(total['median_gain_ratio'], '.2f')}, "
                  f"min {_fmt(total['min_gain_ratio'], '.2f')} (Zipf cells: min {_fmt(total['min_gain_ratio_zipf'], '.2f')}), "
                  f"below base {total['below_base']}, failed {total['failed']}, {total['minutes']} minutes; "
                  f"gold not above base in {total.get('gold_not_above_base', 0)} cells (no ratio there); "
                  f"ours ≥ gold in {total.get('ours_above_gold', 0)}."]
        if total.get("deployed_cells"):
            lines.append(f"Deployed (the quality gate applied): gate passed in {total['deployed_passed']} of "
                         f"{total['deployed_cells']} cells (judged by exploration sessions in {total.get('judged_by_exploration', 0)}), "
                         f"below base {total['deployed_below_base']}, mean gain "
                         f"{total['deployed_mean_gain']:+.4f}, median gain_ratio {_fmt(total['deployed_median_gain_ratio'], '.2f')}.")
    return "\n".join(lines) + "\n"


def load_previous(path: Path) -> dict[str, dict]:
    return {record["key"]: record for record in staged_records(path)
            if record["stage"] == "cell" and not record.get("failed") and "key" in record}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", required=True, type=Path, help="BEIR-layout folders")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--click-models", nargs="+", default=DEFAULT_CLICK_MODELS, help="names in finetuning/simulation/registry.py")
    parser.add_argument("--popularity", nargs="+", default=DEFAULT_POPULARITY, choices=DEFAULT_POPULARITY)
    parser.add_argument("--sessions-per-query", type=int, default=10, help="sessions per train query of the uniform cells")
    parser.add_argument("--max-train-queries", type=int, default=DEFAULT_MAX_TRAIN_QUERIES,
                        help="subsample train queries (same rule for ours and gold; 0: all)")
    parser.add_argument("--randomize-share", type=float, default=0.2,
                        help="share of simulated sessions shown in a random order (the service's exploration; 0: none)")
    parser.add_argument("--max-docs", type=int, default=None, help="corpus cap (judged documents are always kept)")
    parser.add_argument("--max-test-queries", type=int, default=None)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5, help="learning rate of the gold-pairs baseline")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown table (cell JSON lines beside it, .jsonl)")
    parser.add_argument("--resume", action="store_true", help="skip cells already in the .jsonl with the same options")
    parser.add_argument("--no-gold", action="store_true",
                        help="train no gold-pairs baseline: a cached one is still used, other cells get no gain_ratio "
                        "until a later run without --no-gold computes it (--resume then adds it to them)")
    parser.add_argument("--plan", action="store_true", help="print the grid and its estimated cost, run nothing")
    parser.add_argument("--cell-timeout-minutes", type=float, default=None)
    args, extra = parser.parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    if args.max_train_queries == 0:
        args.max_train_queries = None
    from finetuning.simulation.registry import CLICK_MODELS

    unknown = [m for m in args.click_models if m not in CLICK_MODELS]
    if unknown:
        parser.error(f"unknown click models {unknown} (known: {sorted(CLICK_MODELS)})")
    return args, extra


def grid(args: argparse.Namespace) -> Iterable[Cell]:
    for dataset, seed in itertools.product(args.datasets, args.seeds):
        for click_model, popularity in itertools.product(args.click_models, args.popularity):
            yield Cell(dataset, click_model, popularity, seed)


def main(argv: list[str] | None = None) -> dict:
    args, extra = parse_args(argv)
    for dataset in args.datasets:
        check_beir(dataset)
    cells = list(grid(args))

    if args.plan:
        total = 0.0
        for dataset in args.datasets:
            stats = dataset_stats(dataset)
            queries = min(stats["train_queries"], args.max_train_queries or stats["train_queries"])
            for seed in args.seeds:
                gold_extra = None
                for popularity in args.popularity:
                    cell_seconds, gold_extra = estimate_seconds(stats, args, popularity)
                    total += cell_seconds * len(args.click_models)
                total += gold_extra or 0.0
            emit({"stage": "plan", "dataset": dataset.name, **stats, "train_queries_used": queries,
                  "cells": len(args.seeds) * len(args.click_models) * len(args.popularity),
                  "cell_minutes": {p: round(estimate_seconds(stats, args, p)[0] / 60, 1) for p in args.popularity},
                  "gold_minutes": round(estimate_seconds(stats, args, "uniform")[1] / 60, 1)})
        plan = {"stage": "plan", "cells": len(cells), "estimated_hours": round(total / 3600, 2),
                "estimated_hours_gold_cached": round((total - sum(estimate_seconds(dataset_stats(d), args, "uniform")[1] for d in args.datasets) * len(args.seeds)) / 3600, 2)}
        emit(plan)
        return plan

    jsonl = args.out.with_suffix(".jsonl")
    logs = args.out.parent / f"{args.out.stem}-logs"
    previous = load_previous(jsonl) if args.resume else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        jsonl.write_text("", encoding="utf-8")
    gold_dir = CACHE / "gold"
    gold_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    records: list[dict] = []
    for number, cell in enumerate(cells, start=1):
        key = cell_key(cell, args, extra)
        gold_file = gold_dir / f"{cell.dataset.name}-{gold_key(cell.dataset, cell.seed, args)}.json"
        gold = json.loads(gold_file.read_text()) if gold_file.exists() else None
        if key in previous and (gold is not None or args.no_gold):
            record = previous[key]
            logged = stages_from_log(logs / f"{cell.label}.log")
            if "ours" in logged:  # re-read, so that a resumed table has today's columns
                record = {**cell_record(cell, logged, gold, record["minutes"], key),
                          **({"gold_mismatch": True} if record.get("gold_mismatch") else {})}
            log(f"[{number}/{len(cells)}] {cell.label}: from {jsonl}")
        else:
            skip_gold = gold is not None or args.no_gold
            log(f"[{number}/{len(cells)}] {cell.label}" + ("" if skip_gold else " (with the gold baseline)"))
            cell_started = time.perf_counter()
            timeout = args.cell_timeout_minutes * 60 if args.cell_timeout_minutes else None
            stages = run_quality(quality_command(cell, args, extra, skip_gold=skip_gold), logs / f"{cell.label}.log", timeout)
            if gold is None and "gold" in stages and "base" in stages:
                gold = {**stages["gold"], "base": {k: stages["base"].get(k) for k in GOLD_CHECKED}}
                gold_file.write_text(json.dumps(gold, default=float), encoding="utf-8")
            record = cell_record(cell, stages, gold, (time.perf_counter() - cell_started) / 60, key)
            if gold is not None and "base" in stages and gold.get("base") != {k: stages["base"].get(k) for k in GOLD_CHECKED}:
                record["gold_mismatch"] = True  # the cached gold saw other train/test queries or base scores
                log(f"  warning: the cached gold baseline {gold_file} was made with {gold.get('base')}; "
                    "this cell's base differs — remove the file to recompute it")
            with jsonl.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=float) + "\n")
        records.append(record)
        emit(record)
        args.out.write_text(markdown(records, None, args, extra), encoding="utf-8")

    for record, cell in zip(records, cells):  # a cell that ran before its data set's gold baseline existed
        gold_file = gold_dir / f"{cell.dataset.name}-{gold_key(cell.dataset, cell.seed, args)}.json"
        if not record.get("failed") and "gold_gain" not in record and gold_file.exists():
            add_gold(record, json.loads(gold_file.read_text()))
    total = summary(records, (time.perf_counter() - started) / 60)
    args.out.write_text(markdown(records, total, args, extra), encoding="utf-8")
    emit(total)
    return total


if __name__ == "__main__":
    main()
