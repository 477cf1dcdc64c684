"""The chaos campaign (bench/chaos.py), short: at least 50 faults — kill -9 and SIGSTOP of worker
processes, restarts of the campaign's own Redis, nx-27017 and MLflow server, ``pg_terminate_backend``
of its own PostgreSQL database's backends — over small probe tasks, half of which read PostgreSQL
rows and half log an MLflow run; no task lost or stuck, no two executions of one task at the same
time, and tasks done with their PostgreSQL reads and MLflow runs. The benchmark runs 1,000 faults."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parents[1] / "bench" / "chaos.py"


def _chaos_module():
    spec = importlib.util.spec_from_file_location("clicktune_bench_chaos", CHAOS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_short_chaos_campaign_loses_nothing():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    chaos = _chaos_module()
    args = chaos.parse_args(["--faults", "50", "--gap-s", "0.2:0.8", "--drain-s", "60", "--seed", "1"])
    report = chaos.Campaign(args).run()
    print(json.dumps(report, default=str))
    assert report["faults"]["injected"] >= 50
    assert all(report["faults"].get(kind, 0) >= 1 for kind in ("kill9", "redis", "mongo", "pg", "mlflow")), report["faults"]
    assert report["tasks"]["done"] > 0 and report["tasks"]["in_store"] == report["tasks"]["enqueued"]
    assert (report["lost"], report["stuck"], report["concurrent_duplicates"]) == (0, 0, 0), report
    assert report["drained"]
    pg, mlflow = report["services"]["pg"], report["services"]["mlflow"]
    assert pg["done_with_rows_read"] > 0 and mlflow["done_with_run_logged"] > 0, report["services"]
    assert pg["pg_backends_terminated"] >= 1, report["services"]  # the pg faults hit probes' connections
    assert mlflow["mlflow_runs_in_server"] >= mlflow["done_with_run_logged"], report["services"]
