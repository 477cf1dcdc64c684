"""bench/proof_rules.py on synthetic bench/quality.py logs: proof rules replayed on a run's candidate
and their false pass rate under random signs (pure arithmetic, no model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = 0.60


def _bench():
    spec = importlib.util.spec_from_file_location("proof_rules_under_test", REPO / "bench" / "proof_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log(path: Path, own_gain: float, rand_gain: float, kept: bool, seed: int = 0) -> Path:
    """80 queries judged by the own-results judge, the first 40 of them by the exploration judge too."""
    rng = np.random.default_rng(seed)
    own_q = [f"q{i}" for i in range(80)]
    rand_q = [f"q{i}" for i in range(40)][::-1]  # another order: the judges pair up by query text
    own_start, rand_start = rng.uniform(0.3, 0.9, 80), rng.uniform(0.3, 0.9, 40)
    own_after = own_start + own_gain + rng.normal(0, 0.05, 80)
    rand_after = rand_start + rand_gain + rng.normal(0, 0.05, 40)
    ours = {"stage": "ours", "ndcg@10": BASE + (0.02 if kept else 0.0),
            "selection": "candidate beats start" if kept else "start kept",
            "per_query_curve": {"val_own_ndcg@10": [[0, own_start.tolist()]], "val_rand_ndcg@10": [[0, rand_start.tolist()]]},
            "judge_queries": {"val_own_ndcg@10": own_q, "val_rand_ndcg@10": rand_q},
            "candidate_per_query": {"val_own_ndcg@10": own_after.tolist(), "val_rand_ndcg@10": rand_after.tolist()},
            **({} if kept else {"refused_candidate": {"step": 8, "ndcg@10": BASE + 0.03}})}
    path.write_text("\n".join(json.dumps(line) for line in ({"stage": "base", "ndcg@10": BASE}, ours)))
    return path


def test_a_gain_both_judges_see_passes_every_rule_and_noise_rarely_does(tmp_path, capsys):
    rows = _bench().main([str(_log(tmp_path / "gain.jsonl", 0.03, 0.03, kept=True)), "--draws", "300"])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows
    assert {row["rule"] for row in rows} == {"rand", "own", "both", "either_bonferroni", "own_if_rand_agrees", "max_rand_both"}
    assert all(row["passes"] and row["gain"] == pytest.approx(0.02) for row in rows)
    first = rows[0]
    assert first["own_queries"] == 80 and first["rand_queries"] == 40 and first["both_queries"] == 80
    # random signs: each single test holds its level; "either" at full level each would not
    for row in rows:
        assert row["false_pass_rate"] is None or row["false_pass_rate"] <= 0.10, row


def test_a_gain_only_the_own_judge_sees_is_proven_by_both_and_refused_by_rand(tmp_path):
    rows = {row["rule"]: row for row in _bench().main([str(_log(tmp_path / "own.jsonl", 0.03, 0.004, kept=False)), "--draws", "100"])}
    assert not rows["rand"]["passes"] and rows["rand"]["gain"] == 0.0
    assert rows["both"]["passes"] and rows["both"]["gain"] == pytest.approx(0.03)  # the refused checkpoint's test gain
    assert rows["own"]["candidate_gain"] == pytest.approx(0.03)
    assert rows["max_rand_both"]["passes"]  # the larger witness, against the bar of the larger of two


def test_the_max_t_bar_holds_its_level_on_noise():
    bench = _bench()
    rng = np.random.default_rng(3)
    passed = 0
    for _ in range(100):
        own, rand = rng.normal(0, 0.05, 80), np.concatenate([rng.normal(0, 0.05, 40), np.full(40, np.nan)])
        passed += bench.max_t_passes({bench.OWN: own, bench.RAND: rand}, draws=400)
    assert passed / 100 <= 0.11  # 5 % by construction, allowing for 100 trials


def test_a_log_without_the_candidate_is_a_clear_error(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"stage": "base", "ndcg@10": BASE}) + "\n" + json.dumps({"stage": "ours", "ndcg@10": BASE}))
    with pytest.raises(SystemExit, match="candidate_per_query"):
        _bench().main([str(path)])
