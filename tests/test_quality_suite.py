"""bench/quality_suite.py's bookkeeping, with a stand-in for bench/quality.py (no model, seconds):
every cell runs once, the gold baseline once per data set and seed and then from its cache,
the summary line and the markdown table, --resume and --plan."""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_QUALITY = r'''
import argparse, json
parser = argparse.ArgumentParser()
for name in ("--dataset", "--seed", "--click-model", "--popularity", "--sessions-per-query", "--model", "--epochs",
             "--batch-size", "--lr", "--max-train-queries", "--max-test-queries", "--max-docs", "--ours-lr", "--randomize-share"):
    parser.add_argument(name)
parser.add_argument("--skip-gold", action="store_true")
args = parser.parse_args()
with open(CALLS, "a") as handle:
    handle.write(json.dumps({"click_model": args.click_model, "popularity": args.popularity, "seed": args.seed,
                             "skip_gold": args.skip_gold, "ours_lr": args.ours_lr, "randomize_share": args.randomize_share}) + "\n")
if args.click_model == "ubm":
    raise SystemExit(3)
gain = {"pbm": 0.02, "dbn": 0.01, "trust-bias": -0.005, "misleading": 0.03}[args.click_model]
print("noise that is not JSON")
print(json.dumps({"stage": "base", "ndcg@10": 0.5, "train_queries": 7, "test_queries": 5, "docs": 40}))
print(json.dumps({"stage": "simulation", "sessions": 70, "clicks": 50}))
print(json.dumps({"stage": "ours", "ndcg@10": 0.5 + gain, "steps": 3, "best_step": 2, "selection": "candidate beats start",
                  "keeper_z": gain * 100, "keeper_queries": 12, "gate_passed": gain > 0.015, "gate_z": gain * 100, "gate_queries": 12,
                  "gate_metric": "val_rand_ndcg@10" if args.click_model == "pbm" else "val_own_ndcg@10"}))
if not args.skip_gold:
    print(json.dumps({"stage": "gold", "ndcg@10": 0.52 + 0.01 * int(args.seed)}))
print(json.dumps({"stage": "summary"}))
'''


@pytest.fixture
def suite(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("quality_suite_under_test", REPO / "bench" / "quality_suite.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    calls = tmp_path / "calls.jsonl"
    fake = tmp_path / "quality.py"
    fake.write_text(f"CALLS = {str(calls)!r}\n" + FAKE_QUALITY)
    monkeypatch.setattr(module, "QUALITY", fake)
    monkeypatch.setattr(module, "CACHE", tmp_path / "cache")
    module.calls = calls
    return module


@pytest.fixture
def beir(tmp_path) -> Path:
    directory = tmp_path / "tiny-beir"
    shutil.copytree(REPO / "examples" / "scifact-slice", directory)
    return directory


def read_calls(suite) -> list[dict]:
    return [json.loads(line) for line in suite.calls.read_text().splitlines()]


def test_grid_runs_every_cell_and_gold_once_per_dataset_and_seed(suite, beir, tmp_path, capsys):
    out = tmp_path / "out" / "suite.md"
    args = ["--datasets", str(beir), "--seeds", "0", "1", "--out", str(out), "--", "--ours-lr", "3e-5"]
    total = suite.main(args)
    calls = read_calls(suite)
    assert len(calls) == 16 and all(c["ours_lr"] == "3e-5" for c in calls)
    assert all(c["randomize_share"] == "0.2" for c in calls)  # the simulated service explores by default
    gold_runs = [(c["seed"], c["click_model"], c["popularity"]) for c in calls if not c["skip_gold"]]
    assert gold_runs == [("0", "pbm", "uniform"), ("1", "pbm", "uniform")]  # the first cell of each seed
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cells, last = lines[:-1], lines[-1]
    assert len(cells) == 16 and all(c["stage"] == "cell" for c in cells)
    seed1_dbn = next(c for c in cells if c["seed"] == 1 and c["click_model"] == "dbn")
    assert seed1_dbn["gain_ratio"] == pytest.approx(0.01 / 0.03) and seed1_dbn["gold_gain"] == pytest.approx(0.03)
    assert last == total and last["stage"] == "suite" and last["cells"] == 16
    assert last["below_base"] == 4  # trust-bias × 2 popularity × 2 seeds lost 0.005
    assert last["min_gain_ratio"] == pytest.approx(-0.005 / 0.02)
    assert last["median_gain_ratio"] == pytest.approx(statistics.median(c["gain_ratio"] for c in cells))
    # what the service would serve: the gate kept the start model where the fake's gain was small
    assert last["deployed_cells"] == 16 and last["deployed_passed"] == 8 and last["deployed_below_base"] == 0
    assert last["judged_by_exploration"] == 4  # the pbm cells: 2 popularities × 2 seeds
    trust = next(c for c in cells if c["click_model"] == "trust-bias")
    assert trust["below_base"] and not trust["gate_passed"] and trust["deployed_gain"] == 0 and not trust["deployed_below_base"]
    assert seed1_dbn["deployed_gain"] == 0 and seed1_dbn["deployed_gain_ratio"] == 0
    table = out.read_text()
    assert "candidate beats start (-0.5, 12 q)" in table  # the keeper's paired test, with its z and queries
    assert "keep start (-0.5; own, 12 q)" in table and "deploy (3.0; own, 12 q)" in table and "deploy (2.0; rand, 12 q)" in table
    assert "Deployed (the quality gate applied)" in table and "judged by exploration sessions in 4" in table
    assert table.count("| tiny-beir |") == 16 and "median gain_ratio" in table and "**yes**" in table
    assert len(out.with_suffix(".jsonl").read_text().splitlines()) == 16
    assert (out.parent / "suite-logs" / "tiny-beir-dbn-zipf-s1.log").exists()

    # a second run: gold comes from the cache; --resume skips the cells already run
    suite.calls.unlink()
    suite.main(["--datasets", str(beir), "--seeds", "0", "--click-models", "pbm", "dbn", "--out", str(out)])
    assert all(c["skip_gold"] for c in read_calls(suite)) and len(read_calls(suite)) == 4
    suite.calls.unlink()
    suite.main(["--datasets", str(beir), "--seeds", "0", "--click-models", "pbm", "dbn", "--out", str(out), "--resume"])
    assert not suite.calls.exists()
    assert not any(c.get("gold_mismatch") for c in cells)

    # a cached gold made beside another base run is flagged
    for gold_file in (tmp_path / "cache" / "gold").glob("*.json"):
        gold = json.loads(gold_file.read_text())
        gold_file.write_text(json.dumps({**gold, "base": {**gold["base"], "train_queries": 99}}))
    capsys.readouterr()
    suite.main(["--datasets", str(beir), "--seeds", "0", "--click-models", "pbm", "--popularity", "zipf", "--out", str(out)])
    assert json.loads(capsys.readouterr().out.splitlines()[0])["gold_mismatch"] is True


def test_no_gold_runs_no_gold_baseline_and_a_later_run_adds_it(suite, beir, tmp_path):
    out = tmp_path / "s.md"
    first = ["--datasets", str(beir), "--click-models", "pbm", "--popularity", "uniform", "zipf", "--out", str(out)]
    total = suite.main([*first, "--no-gold"])
    assert [c["skip_gold"] for c in read_calls(suite)] == [True, True] and total["median_gain_ratio"] is None
    suite.calls.unlink()
    suite.main([*first, "--no-gold", "--resume"])  # nothing to run again
    assert not suite.calls.exists()
    total = suite.main([*first[:-2], "--popularity", "uniform", "--out", str(tmp_path / "gold.md")])  # computes gold
    assert [c["skip_gold"] for c in read_calls(suite)] == [False]
    suite.calls.unlink()
    total = suite.main([*first, "--resume"])
    assert not suite.calls.exists() and total["median_gain_ratio"] == pytest.approx(1.0)  # (0.52 - 0.5) / 0.02


def test_a_failing_cell_is_reported_not_fatal(suite, beir, tmp_path, capsys):
    total = suite.main(["--datasets", str(beir), "--click-models", "ubm", "pbm", "--popularity", "zipf", "--out", str(tmp_path / "s.md")])
    assert total["failed"] == 1 and total["cells"] == 2 and total["median_gain_ratio"] == pytest.approx(1.0)
    assert "failed (see logs)" in (tmp_path / "s.md").read_text()
    capsys.readouterr()


def test_plan_and_input_checks(suite, beir, tmp_path, capsys):
    plan = suite.main(["--datasets", str(beir), "--plan", "--max-train-queries", "50"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    from finetuning.datasets.beir import BeirDataset

    training = len(BeirDataset.load(beir).training_query_ids())  # train queries not worded as a test query
    assert rows[0]["train_queries"] == training and rows[0]["train_queries_used"] == 50 and rows[0]["cells"] == 8
    assert plan["cells"] == 8 and 0 < plan["estimated_hours_gold_cached"] < plan["estimated_hours"]
    with pytest.raises(SystemExit):
        suite.main(["--datasets", str(tmp_path), "--plan"])  # not a BEIR folder
    with pytest.raises(SystemExit):
        suite.main(["--datasets", str(beir), "--click-models", "nope", "--plan"])
    capsys.readouterr()


def test_no_ratio_to_a_gold_baseline_that_lost(suite, tmp_path):
    """A gold baseline below the base model gives no gain_ratio (its sign would flip the meaning);
    the cell keeps both gains and the summary counts it."""
    cell = suite.Cell(tmp_path, "pbm", "uniform", 0)
    stages = {"base": {"ndcg@10": 0.30}, "ours": {"ndcg@10": 0.305, "gate_passed": True, "gate_z": 1.5}}
    record = suite.cell_record(cell, stages, {"ndcg@10": 0.29}, 1.0, "k")
    assert record["gain_ratio"] is None and record["deployed_gain_ratio"] is None
    assert record["gold_gain"] == pytest.approx(-0.01) and record["ours_gain"] == pytest.approx(0.005)
    total = suite.summary([record], 1.0)
    assert total["gold_not_above_base"] == 1 and total["ours_above_gold"] == 1 and total["median_gain_ratio"] is None
    assert "n/a (gold ≤ base)" in suite.markdown([record], total, suite.parse_args(["--datasets", str(tmp_path)])[0], [])
