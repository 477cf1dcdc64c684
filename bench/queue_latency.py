"""Enqueue → claimed latency of clicktune tasks, beside bare Dramatiq on the same Redis.

    python bench/queue_latency.py [--tasks 500] [--rate 20] [--threads 4]

Starts a MongoDB wire server (nx-27017, SQLite file) and one ``clicktune worker`` process on the
local Redis (own namespace), enqueues ``--tasks`` trivial probe tasks (``seconds=0``) at ``--rate``
per second through :class:`worker.client.ClicktuneClient`, and measures, per task,
``started_at`` (set by the worker's atomic claim) − ``created_at`` (set by the client before it
inserts the document and sends the message). Baseline, same run, same Redis, same pacing: a bare
Dramatiq worker whose no-op actor records ``now − message_timestamp``. Prints JSON lines.
Target: p50 < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

BASELINE_ENV = "CLICKTUNE_BENCH_BASELINE_WORKER"

if os.environ.get(BASELINE_ENV) == "1":  # imported by the baseline `dramatiq bench.queue_latency` worker
    import dramatiq
    import redis as _redis
    from dramatiq.brokers.redis import RedisBroker

    _url, _namespace = os.environ["CLICKTUNE_REDIS_URL"], os.environ["CLICKTUNE_REDIS_NAMESPACE"]
    baseline_broker = RedisBroker(url=_url, namespace=_namespace)
    dramatiq.set_broker(baseline_broker)
    _conn = _redis.Redis.from_url(_url)

    @dramatiq.actor(actor_name="noop", queue_name="noop", max_retries=0)
    def noop(sent_ms: float) -> None:
        _conn.rpush(f"{_namespace}:latencies", time.time() * 1000 - sent_ms)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99),
            "max_ms": round(ordered[-1], 2), "mean_ms": round(sum(ordered) / len(ordered), 2)}


def paced(n: int, rate: float):
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield i


def worker_ready(handle) -> bool:
    return "Worker process is ready" in handle.log_tail(100_000)


def run_clicktune(args, env: dict[str, str]) -> dict:
    from worker.client import ClicktuneClient
    from worker.local_services import free_port, start_process
    from worker.settings import Settings

    settings = Settings(**{k[len("CLICKTUNE_"):].lower(): v for k, v in env.items() if k.startswith("CLICKTUNE_")})
    worker = start_process("worker", [str(Path(sys.executable).parent / "clicktune"), "worker", "--processes", "1",
                                      "--threads", str(args.threads)],
                           free_port(), "", env=env, ready_timeout=120, workdir=REPO_ROOT, ready_check=worker_ready)
    try:
        client = ClicktuneClient(settings)
        client.wait(client.enqueue_probe(0.0), timeout=60)  # warm-up: connections, indexes
        ids, enqueue_ms = [], []
        for _ in paced(args.tasks, args.rate):
            t0 = time.perf_counter()
            ids.append(client.enqueue_probe(0.0))
            enqueue_ms.append((time.perf_counter() - t0) * 1000)
        drain_start = time.perf_counter()
        tasks = [client.wait(task_id, timeout=300, kind="probe", poll_s=0.02) for task_id in ids]
        drain_s = time.perf_counter() - drain_start
        bad = [t.status.value for t in tasks if t.status.value != "done"]
        latencies = [(t.started_at - t.created_at).total_seconds() * 1000 for t in tasks]
        run_ms = [(t.finished_at - t.started_at).total_seconds() * 1000 for t in tasks]
        return {"claimed": percentiles(latencies), "enqueue_call": percentiles(enqueue_ms),
                "claim_to_done": percentiles(run_ms), "not_done": len(bad), "drain_after_last_enqueue_s": round(drain_s, 2)}
    finally:
        worker.stop(timeout=15)


def run_baseline(args, env: dict[str, str]) -> dict:
    import dramatiq
    import redis
    from dramatiq.brokers.redis import RedisBroker

    from worker.local_services import free_port, start_process

    namespace = env["CLICKTUNE_REDIS_NAMESPACE"] + "-baseline"
    worker_env = {**env, "CLICKTUNE_REDIS_NAMESPACE": namespace, BASELINE_ENV: "1"}
    worker = start_process("baseline", [sys.executable, "-m", "dramatiq", "bench.queue_latency", "--processes", "1",
                                        "--threads", str(args.threads)],
                           free_port(), "", env=worker_env, ready_timeout=120, workdir=REPO_ROOT,
                           ready_check=worker_ready)
    conn = redis.Redis.from_url(env["CLICKTUNE_REDIS_URL"])
    try:
        broker = RedisBroker(url=env["CLICKTUNE_REDIS_URL"], namespace=namespace)
        broker.declare_queue("noop")
        key = f"{namespace}:latencies"

        def send() -> None:
            broker.enqueue(dramatiq.Message(queue_name="noop", actor_name="noop", args=(time.time() * 1000,),
                                            kwargs={}, options={}))

        send()
        deadline = time.monotonic() + 60
        while conn.llen(key) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        conn.delete(key)
        for _ in paced(args.tasks, args.rate):
            send()
        deadline = time.monotonic() + 120
        while conn.llen(key) < args.tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        latencies = [float(v) for v in conn.lrange(key, 0, -1)]
        if len(latencies) < args.tasks:
            raise RuntimeError(f"baseline: {len(latencies)}/{args.tasks} ran: {worker.log_tail()}")
        return {"claimed": percentiles(latencies)}
    finally:
        worker.stop(timeout=15)
        for k in conn.scan_iter(f"{namespace}*"):
            conn.delete(k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="tasks enqueued per second")
    parser.add_argument("--threads", type=int, default=4, help="worker threads (one worker process)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    from worker.local_services import start_mongo_wire

    namespace = f"clicktune-bench-{uuid.uuid4().hex[:8]}"
    with start_mongo_wire(Path(tempfile.mkdtemp(prefix="clicktune-bench-")) / "mongo.sqlite") as mongo:
        env = {"CLICKTUNE_MONGO_URL": mongo.url, "CLICKTUNE_MONGO_DB": "bench", "CLICKTUNE_REDIS_URL": args.redis_url,
               "CLICKTUNE_REDIS_NAMESPACE": namespace, "PYTHONPATH": str(REPO_ROOT)}
        baseline = run_baseline(args, env)
        ours = run_clicktune(args, env)
    common = {"benchmark": "queue_latency", "tasks": args.tasks, "rate_per_s": args.rate, "threads": args.threads}
    print(json.dumps({**common, "system": "dramatiq_noop_baseline", **baseline["claimed"]}))
    print(json.dumps({**common, "system": "clicktune_probe", "stage": "enqueue_to_claimed", **ours["claimed"],
                      "not_done": ours["not_done"], "drain_after_last_enqueue_s": ours["drain_after_last_enqueue_s"]}))
    print(json.dumps({**common, "system": "clicktune_probe", "stage": "enqueue_call", **ours["enqueue_call"]}))
    print(json.dumps({**common, "system": "clicktune_probe", "stage": "claim_to_done", **ours["claim_to_done"]}))
    p50, base50 = ours["claimed"]["p50_ms"], baseline["claimed"]["p50_ms"]
    print(json.dumps({**common, "summary": True, "p50_ms": p50, "p99_ms": ours["claimed"]["p99_ms"],
                      "baseline_p50_ms": base50, "ratio_p50_vs_baseline": round(p50 / base50, 2) if base50 else None,
                      "target_p50_ms": 50, "meets_target": p50 < 50}))


if __name__ == "__main__":
    main()
