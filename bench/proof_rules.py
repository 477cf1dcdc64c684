"""Which proof should trained weights pass before they replace the start? Replays proof rules on runs.

    python bench/quality.py --dataset DIR --randomize-share 0.2 … > run.jsonl   (or a quality_suite cell log)
    python bench/proof_rules.py run.jsonl [more.jsonl …] [--draws 2000]

Reads the ``ours`` stage of ``bench/quality.py`` logs: each held-out judge per held-out query at
the start (``per_query_curve``, step 0) and at the keeper's candidate (``candidate_per_query``: the
first best trained checkpoint by the judge that chooses), the query texts each judge's values
belong to (``judge_queries``), and the candidate's test nDCG@10 (the run's own figure when the
keeper kept it, ``refused_candidate`` when it kept the start). For each rule it says whether the
candidate passes and what the test queries say of that choice (``gain``: the candidate's test gain
over the base model when it passes, 0 when the start is kept), and estimates the rule's **false
pass rate** on this run's own noise: every held-out query's differences (candidate − start, on every
judge at once, so the judges' correlation is kept) get a random sign, ``--draws`` times; the share
of draws that pass is the rule's size under "no gain" (one-sided level 5 % is the target).

Rules (each the paired t-test of :mod:`finetuning.metrics.paired`; ``n ≥ 10`` queries):

- ``rand``: the exploration judge at level 1.645 (the engine's proof before ``max_rand_both``);
- ``own``: the own-results judge at 1.645;
- ``both``: ``val_both_ndcg@10`` at 1.645 — per query the mean of the judges it has;
- ``either_bonferroni``: ``rand`` or ``own``, each at half the level (1.96);
- ``own_if_rand_agrees``: ``rand``, or ``own`` when the exploration judge's mean difference is > 0;
- ``max_rand_both`` (the engine's proof): the larger of the ``rand`` and ``both`` t statistics against
  the 95th percentile of that maximum when every query's differences get a random sign (a max-T
  permutation test, Westfall & Young 1993: two witnesses, one level, their correlation allowed
  for; :func:`finetuning.metrics.paired.strongest_witness`).

Test queries only score choices made from held-out figures; they choose nothing here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from finetuning.metrics.paired import paired_difference, strongest_witness  # noqa: E402

RAND, OWN, BOTH = "val_rand_ndcg@10", "val_own_ndcg@10", "val_both_ndcg@10"
LEVEL, HALF_LEVEL, MIN_QUERIES = 1.645, 1.96, 10

Differences = dict[str, np.ndarray]  # judge → candidate − start per query (NaN where the query is not judged)


def _test(differences: np.ndarray):
    present = differences[~np.isnan(differences)]
    return paired_difference([0.0] * len(present), present.tolist())


def _passes(differences: np.ndarray, z: float) -> bool:
    test = _test(differences)
    return test.n >= MIN_QUERIES and test.beyond(z)


def _both(d: Differences) -> np.ndarray:
    return np.nanmean(np.vstack([d[OWN], d[RAND]]), axis=0)


def max_t_passes(d: Differences, draws: int = 2000, seed: int = 0) -> bool:
    """``max_rand_both``: the engine's :func:`~finetuning.metrics.paired.strongest_witness` on the two
    judges (the exploration judge's queries first, as ``combine_judges`` orders them)."""
    rand, both = d[RAND], _both(d)
    order = np.argsort(np.isnan(rand), kind="stable")  # queries the exploration judge has first
    judges = [rand[order][~np.isnan(rand[order])], both[order]]
    if min(len(j) for j in judges) < MIN_QUERIES:
        return False
    _, test = strongest_witness([([0.0] * len(j), j.tolist()) for j in judges], LEVEL, draws=draws, seed=seed)
    return test.beyond(LEVEL)


RULES: dict[str, Callable[[Differences], bool]] = {
    "rand": lambda d: _passes(d[RAND], LEVEL),
    "own": lambda d: _passes(d[OWN], LEVEL),
    "both": lambda d: _passes(_both(d), LEVEL),
    "either_bonferroni": lambda d: _passes(d[RAND], HALF_LEVEL) or _passes(d[OWN], HALF_LEVEL),
    "own_if_rand_agrees": lambda d: _passes(d[RAND], LEVEL) or (_passes(d[OWN], LEVEL) and _test(d[RAND]).mean > 0),
    "max_rand_both": max_t_passes,
}

#: Rules too costly to replay inside every random-sign draw (a permutation test within each): no false pass rate.
NESTED = {"max_rand_both"}


def read_ours(path: Path) -> tuple[dict, float]:
    """The ``ours`` stage and the base model's test nDCG@10 of a ``bench/quality.py`` log."""
    stages = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("stage") in ("base", "ours"):
            stages[record["stage"]] = record
    ours = stages.get("ours", {})
    if "candidate_per_query" not in ours or "judge_queries" not in ours:
        raise SystemExit(f"{path}: no candidate_per_query / judge_queries (a bench/quality.py run that kept a candidate or "
                         "scored its refused one, from this version on)")
    return ours, float(stages["base"]["ndcg@10"])


def differences(ours: dict) -> Differences:
    """Per query (the union of both judges' queries), each judge's candidate − start."""
    start = {metric: curve[0][1] for metric, curve in ours["per_query_curve"].items()}
    queries = list(dict.fromkeys(q for metric in (OWN, RAND) for q in ours["judge_queries"][metric]))
    index = {q: i for i, q in enumerate(queries)}
    out = {}
    for metric in (OWN, RAND):
        column = np.full(len(queries), np.nan)
        for query, before, after in zip(ours["judge_queries"][metric], start[metric], ours["candidate_per_query"][metric]):
            column[index[query]] = after - before
        out[metric] = column
    return out


def candidate_gain(ours: dict, base: float) -> float | None:
    """The candidate's test nDCG@10 gain over the base model, whichever weights the run kept."""
    if ours.get("selection") == "candidate beats start":
        return float(ours["ndcg@10"]) - base
    refused = ours.get("refused_candidate")
    return float(refused["ndcg@10"]) - base if refused else None


def false_pass_rate(rule: Callable[[Differences], bool], d: Differences, draws: int, rng: np.random.Generator) -> float:
    n = len(d[OWN])
    signs = rng.choice([-1.0, 1.0], size=(draws, n))
    return float(np.mean([rule({metric: column * flip for metric, column in d.items()}) for flip in signs]))


def rule_rows(ours: dict, base: float, draws: int, seed: int) -> list[dict]:
    d = differences(ours)
    gain = candidate_gain(ours, base)
    judges = {name: _test(column) for name, column in ((RAND, d[RAND]), (OWN, d[OWN]), (BOTH, _both(d)))}
    figures = {f"{name.removeprefix('val_').removesuffix('_ndcg@10')}_z": round(t.z, 3) for name, t in judges.items()}
    figures.update({f"{name.removeprefix('val_').removesuffix('_ndcg@10')}_queries": t.n for name, t in judges.items()})
    rows = []
    for name, rule in RULES.items():
        passed = rule(d)
        rows.append({"stage": "proof_rule", "rule": name, "passes": passed, "candidate_gain": gain,
                     "gain": (gain if passed else 0.0) if gain is not None else None,
                     "false_pass_rate": (None if name in NESTED else
                                         round(false_pass_rate(rule, d, draws, np.random.default_rng(seed)), 4)), **figures})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="bench/quality.py outputs (quality_suite cell logs)")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = []
    for path in args.logs:
        ours, base = read_ours(path)
        for row in rule_rows(ours, base, args.draws, args.seed):
            row = {"log": path.name, **row}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
