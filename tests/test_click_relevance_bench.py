"""bench/click_relevance.py on a SciFact slice: BM25 shows the results, simulated users click, and the
two click-model fits are scored against the train judgements (seconds, no model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("click_relevance_bench_under_test", REPO / "bench" / "click_relevance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_per_rank_rates_take_weight_off_trusted_noise_clicks_and_the_bench_says_so(scifact_dir, capsys):
    bench = _bench()
    summary = bench.main(["--datasets", str(scifact_dir), "--click-models", "trust-bias", "pbm", "--popularity", "uniform",
                          "--max-train-queries", "60"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cells = {line["click_model"]: line for line in lines if line["stage"] == "cell"}
    assert lines[-1] == json.loads(json.dumps(summary)) and summary["cells"] == 2
    trust, pbm = cells["trust-bias"], cells["pbm"]
    assert trust["sessions"] == pbm["sessions"] == 600
    # trust bias: a pooled noise rate calls the top results users click out of trust relevant
    assert trust["baseline"]["noise_share"] > 0.2
    assert trust["per_rank"]["noise_share"] < 0.6 * trust["baseline"]["noise_share"]
    # PBM's noise does not depend on the rank: both fits agree
    assert abs(pbm["per_rank"]["noise_share"] - pbm["baseline"]["noise_share"]) < 0.05
    for cell in (trust, pbm):
        for fit in ("baseline", "per_rank"):
            assert 0.5 < cell[fit]["auc"] <= 1 and 0 < cell[fit]["relevant_kept"] <= 1

