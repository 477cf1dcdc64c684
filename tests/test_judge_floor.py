"""bench/judge_floor.py on a synthetic bench/quality.py log: the keeper and the gate replayed on
subsets of the held-out queries (pure arithmetic, no model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = 0.30
STEPS = [0, 4, 8, 12]
JUDGE_MEANS = [0.70, 0.72, 0.74, 0.73]  # the judge's figure by check: best at step 8
TEST = [BASE, BASE + 0.010, BASE + 0.020, BASE + 0.015]  # test nDCG@10 by check: also best at step 8


def _bench():
    spec = importlib.util.spec_from_file_location("judge_floor_under_test", REPO / "bench" / "judge_floor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log(path: Path, queries: int = 60) -> Path:
    rng = np.random.default_rng(1)
    values = rng.normal(0, 0.1, (queries, 1)) + rng.normal(0, 0.05, (queries, len(STEPS)))
    values += np.array(JUDGE_MEANS) - values.mean(axis=0)  # exactly the designed mean at every check
    curve = [[step, values[:, k].tolist()] for k, step in enumerate(STEPS)]
    lines = [{"stage": "base", "ndcg@10": BASE}, "not JSON",
             {"stage": "ours", "test_ndcg@10_curve": [[s, t] for s, t in zip(STEPS[1:], TEST[1:])],
              "per_query_curve": {"val_rand_ndcg@10": curve}}]
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines))
    return path


def test_the_whole_judge_keeps_its_best_check_and_a_few_queries_choose_worse(tmp_path, capsys):
    rows = _bench().main([str(_log(tmp_path / "run.jsonl")), "--sizes", "10", "30", "--draws", "400"])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows
    by_size = {row["queries"]: row for row in rows}
    assert sorted(by_size) == [10, 30, 60] and by_size[60]["draws"] == 1 and by_size[10]["draws"] == 400
    whole = by_size[60]
    assert whole["kept_gain"] == pytest.approx(0.020) and whole["deployed_gain"] == pytest.approx(0.020)
    assert whole["deploy_rate"] == 1.0 and whole["kept_below_base"] == 0.0
    assert whole["best_gain"] == pytest.approx(0.020) and whole["last_gain"] == pytest.approx(0.015)
    # fewer queries: noisier choices, fewer deploys
    assert by_size[10]["kept_gain"] < by_size[30]["kept_gain"] <= whole["kept_gain"]
    assert by_size[10]["deploy_rate"] < by_size[30]["deploy_rate"] <= 1.0
    # the keeper's burden of proof is the gate's test: what it keeps is what the gate deploys
    assert all(row["kept_gain"] == pytest.approx(row["deployed_gain"]) for row in rows)


def test_the_earlier_keeper_kept_unproven_checkpoints_the_gate_refused(tmp_path, capsys):
    rows = _bench().main([str(_log(tmp_path / "run.jsonl")), "--sizes", "10", "--draws", "400", "--keep-z", "-1"])
    small = next(row for row in rows if row["queries"] == 10)
    assert small["keep_z"] == -1.0 and small["kept_gain"] > small["deployed_gain"]


def test_a_judge_that_falls_keeps_the_start_and_a_log_without_curves_is_refused(tmp_path):
    bench = _bench()
    stages = bench.read_run(_log(tmp_path / "run.jsonl"))
    falling = [[step, (np.array(values) - 0.05 * k).tolist()] for k, (step, values)
               in enumerate(stages["ours"]["per_query_curve"]["val_rand_ndcg@10"])]
    stages["ours"]["per_query_curve"]["val_rand_ndcg@10"] = falling
    (row,) = bench.judge_rows(stages, [], draws=1, seed=0)
    assert row["kept_gain"] == 0.0 and row["deploy_rate"] == 0.0  # the start is kept, whatever test says
    (tmp_path / "plain.jsonl").write_text(json.dumps({"stage": "ours", "ndcg@10": 0.3}))
    with pytest.raises(SystemExit, match="--score-each-check"):
        bench.read_run(tmp_path / "plain.jsonl")
