"""How many judged held-out queries a judge needs before its choice of weights can be trusted.

    python bench/quality.py --dataset DIR --score-each-check --randomize-share 0.2 … > run.jsonl
    python bench/judge_floor.py run.jsonl [more.jsonl …] [--sizes 10 15 20 30] [--draws 2000]

Reads ``bench/quality.py --score-each-check`` logs: the test nDCG@10 of the weights at every
validation (``test_ndcg@10_curve``, a diagnostic) and each held-out judge per held-out query at
the start and at every validation (``per_query_curve``). For each judge and each size ``n`` it
draws ``n`` of the judge's held-out queries (without replacement, ``--draws`` times; the judge's
own count once) and replays on them what the service does with its figures:

- **the keeper** (:class:`finetuning.callbacks.KeepBestWeights`, the engine's defaults
  ``keep_candidate_z`` and ``keep_min_queries``, or ``--keep-z``): the first best-scoring validated
  checkpoint when it beats the start beyond the noise on at least that many queries (the paired
  test of :mod:`finetuning.metrics.paired`); else the start. ``--keep-z -1`` replays the earlier
  rule (the checkpoint unless worse beyond one standard error);
- **the gate** (``worker/jobs/fine_tuning/quality_gate.py``'s defaults): deploy the kept weights
  when there are at least 10 queries and the same paired test passes at ``gate_z`` 1.645.

The test curve then says what each choice was worth: ``kept_gain`` (mean test nDCG@10 gain of the
kept weights over the base model), ``kept_below_base`` (share of draws that kept weights below
it), ``deployed_gain`` (the gate applied: 0 when it keeps the start) and ``deploy_rate``. Beside them
``last_gain`` (the last checkpoint) and ``best_gain`` (the best checkpoint on test, which no judge
may know). One JSON line per log × judge × size. Subsampling queries isolates the judge's noise:
the weights are those trained on the whole log. Test queries never choose anything here either:
they only score choices made from held-out figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from finetuning.metrics.paired import paired_difference  # noqa: E402
from finetuning.params import FineTuningSettings  # noqa: E402
from worker.jobs.fine_tuning.quality_gate import GATE_Z, MIN_GATE_QUERIES  # noqa: E402  (the gate's defaults)

KEEP_Z = FineTuningSettings().keep_candidate_z
KEEP_MIN_QUERIES = FineTuningSettings().keep_min_queries


def read_run(path: Path) -> dict:
    """The ``base`` and ``ours`` stages of a ``bench/quality.py`` log."""
    stages = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("stage") in ("base", "ours", "simulation"):
            stages[record["stage"]] = record
    if "per_query_curve" not in stages.get("ours", {}):
        raise SystemExit(f"{path}: no per_query_curve (run bench/quality.py with --score-each-check)")
    return stages


def _proven(values: np.ndarray, checkpoint: int, z: float, min_queries: int) -> bool:
    test = paired_difference(values[:, 0].tolist(), values[:, checkpoint].tolist())
    return test.n >= min_queries and test.beyond(z)


def replay(values: np.ndarray, test: np.ndarray, base: float, keep_z: float = KEEP_Z) -> tuple[float, float]:
    """(kept weights' test figure, deployed test figure) for one draw. ``values``: queries × checks
    (column 0 the start); ``test``: the test figure at each check (``test[0]`` = ``base``)."""
    means = values.mean(axis=0)
    candidate = 1 + int(np.argmax(means[1:]))  # the first best trained checkpoint, as the keeper takes it
    kept = candidate if _proven(values, candidate, keep_z, KEEP_MIN_QUERIES) else 0
    if kept == 0:
        return base, base
    return float(test[kept]), float(test[kept]) if _proven(values, kept, GATE_Z, MIN_GATE_QUERIES) else base


def judge_rows(stages: dict, sizes: list[int], draws: int, seed: int, keep_z: float = KEEP_Z) -> list[dict]:
    ours, base = stages["ours"], float(stages["base"]["ndcg@10"])
    test_by_step = {int(step): float(value) for step, value in ours["test_ndcg@10_curve"]}
    test_by_step[0] = base
    rows = []
    for metric, curve in sorted(ours["per_query_curve"].items()):
        steps = [int(step) for step, _ in curve if int(step) in test_by_step]
        values = np.array([values for step, values in curve if int(step) in test_by_step], dtype=float).T
        test = np.array([test_by_step[step] for step in steps])
        queries = values.shape[0]
        rng = np.random.default_rng(seed)
        for size in [s for s in sizes if s < queries] + [queries]:
            picks = [np.arange(queries)] if size == queries else [rng.choice(queries, size, replace=False) for _ in range(draws)]
            outcomes = np.array([replay(values[pick], test, base, keep_z) for pick in picks])
            figures = {
                "kept_gain": outcomes[:, 0].mean() - base, "kept_below_base": (outcomes[:, 0] < base).mean(),
                "deployed_gain": outcomes[:, 1].mean() - base, "deploy_rate": (outcomes[:, 1] != base).mean(),
                "last_gain": test[-1] - base, "best_gain": test.max() - base,
            }
            rows.append({"stage": "judge_floor", "metric": metric, "keep_z": keep_z, "queries": size, "of": queries, "draws": len(picks),
                         **{name: round(float(value), 6) for name, value in figures.items()}, "checks": steps})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="bench/quality.py --score-each-check outputs")
    parser.add_argument("--sizes", nargs="+", type=int, default=[10, 15, 20, 30, 45])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-z", type=float, default=KEEP_Z,
                        help="the keeper's level (default: the engine's keep_candidate_z; -1: kept unless worse beyond 1 SE)")
    args = parser.parse_args(argv)
    rows = []
    for path in args.logs:
        for row in judge_rows(read_run(path), args.sizes, args.draws, args.seed, args.keep_z):
            row = {"log": path.name, **row}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
