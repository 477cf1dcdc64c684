"""Benchmark of the HTTP API against the local stack, with the direct DAO / in-process path as the
baseline in the same run.

    python bench/api.py                                   # 2,000 sessions, 5,000-item collection
    python bench/api.py --sessions 500 --items 1000       # smaller, on a busy machine

Starts a local nx-27017 server and a ``clicktune api`` process (uvicorn, one worker) on the
machine's Redis, with an embedded Chroma directory; builds a blue collection of ``--items`` items
embedded by a tiny random text model (the search cost measured is the API + the vector store +
encoding one query, not a large model). Prints JSON lines:

- ``ingest_sessions``: sessions with nested events, bulk (``POST /v1/clickstream/records/bulk`` in
  chunks of ``--chunk``) vs ``ClickstreamDAO.ingest`` on the same kind of data — sessions/s, events/s;
- ``ingest_events_bulk``: events of stored sessions, ``POST /v1/clickstream/events/bulk`` vs
  ``ClickstreamDAO.push_events`` — events/s;
- ``ingest_events_single``: one event per call, ``POST /v1/clickstream/sessions/{id}/events`` vs
  ``push_events([event])`` — events/s;
- ``search``: ``POST /v1/search`` (k=10) vs ``Searcher.search`` in this process — p50/p99 ms;
- ``summary``: the ratios and the targets (bulk ingest >= 0.5x the DAO; search p50 <= 50 ms).
No assertions: figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dao.blue_pointer import BluePointers  # noqa: E402
from dao.clickstream import ClickstreamDAO  # noqa: E402
from dao.mongo import mongo_database  # noqa: E402
from worker.api.auth import hash_key  # noqa: E402
from worker.local_services import LocalProcess, free_port, start_mongo_wire, start_process  # noqa: E402
from worker.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
WORDS = ["protein", "gene", "cell", "cancer", "risk", "water", "music", "sport", "study", "effect", "blood", "brain",
         "virus", "drug", "trial", "dose", "heart", "lung", "liver", "bone"]


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def sessions(n: int, prefix: str, seed: int, results: int = 10) -> list[dict]:
    """Sessions of ``results`` shown items each with 0–3 clicks (mean 1.5)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        session_id = f"{prefix}-{i}"
        objects = [f"item-{rng.randrange(1_000_000)}-{rank}" for rank in range(1, results + 1)]
        created = T0 + timedelta(seconds=i)
        out.append({
            "session_id": session_id, "search_query": " ".join(rng.sample(WORDS, 3)), "created_at": created.isoformat(),
            "search_results": [{"object_id": o, "rank": r, "meta": {"path": f"{o}.json"}} for r, o in enumerate(objects, 1)],
            "events": [{"event_id": f"{session_id}-{k}", "object_id": objects[c],
                        "created_at": (created + timedelta(seconds=5 * (k + 1))).isoformat()}
                       for k, c in enumerate(sorted(rng.sample(range(results), rng.choice((0, 1, 2, 3)))))],
        })
    return out


def loose_events(stored: list[dict], per_session: int, prefix: str) -> list[dict]:
    """New events (with ``session_id``) on results shown in ``stored`` sessions."""
    events = []
    for session in stored:
        for k in range(per_session):
            result = session["search_results"][k % len(session["search_results"])]
            events.append({"event_id": f"{prefix}-{session['session_id']}-{k}", "session_id": session["session_id"],
                           "object_id": result["object_id"], "created_at": "2024-01-02T00:00:00+00:00"})
    return events


def without_events(records: list[dict]) -> list[dict]:
    return [{**r, "events": []} for r in records]


def n_events(records: list[dict]) -> int:
    return sum(len(r["events"]) for r in records)


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p99_ms": round(p99 * 1000, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2), "n": len(ordered)}


def build_blue(settings: Settings, db, n_items: int, root: Path) -> str:
    """Write ``n_items`` JSON documents, embed them with a tiny model and make them blue."""
    from finetuning.models.tiny import build_tiny_text_model
    from finetuning.model_ref import ModelRef
    from worker.indexing import ItemRef, build_index
    from worker.vector_store import create_vector_store

    rng = random.Random(7)
    items_dir = root / "items"
    items_dir.mkdir(parents=True)
    os.environ["CLICKTUNE_LOADER_ALLOWED_ROOTS"] = str(items_dir)  # the operator's allow-list: this run's items
    for i in range(n_items):
        doc = {"_id": f"doc{i}", "title": " ".join(rng.sample(WORDS, 2)), "text": " ".join(rng.choices(WORDS, k=12))}
        (items_dir / f"doc{i}.json").write_text(json.dumps(doc))
    model_dir = build_tiny_text_model(root / "model", seed=3, words=WORDS)
    ref = f"dir:{model_dir}"
    build_index(store=create_vector_store(settings), pointers=BluePointers(db), model=ModelRef.parse(ref).load(), model_ref=ref,
                loader_config={"source": "local_file", "root_dir": str(items_dir)},
                items=[ItemRef(object_id=f"doc{i}", meta={"path": f"doc{i}.json"}) for i in range(n_items)],
                page_size=512)
    return ref


def start_api(env: dict[str, str]) -> LocalProcess:
    port = free_port()

    def live(handle: LocalProcess) -> bool:
        try:
            with urllib.request.urlopen(f"{handle.url}/v1/health/live", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    cmd = [str(Path(sys.executable).parent / "clicktune"), "api", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning"]
    return start_process("api", cmd, port, f"http://127.0.0.1:{port}", env={**env, "PYTHONPATH": str(REPO)},
                         ready_timeout=120, workdir=REPO, ready_check=live)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="Sessions per ingest path (bulk).")
    parser.add_argument("--chunk", type=int, default=500, help="Records per bulk request.")
    parser.add_argument("--single-events", type=int, default=300, help="Events sent one per call, per path.")
    parser.add_argument("--items", type=int, default=5000, help="Items in the blue collection.")
    parser.add_argument("--queries", type=int, default=200, help="Search requests per path.")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="clicktune-bench-api-"))
    key = f"bench-{uuid.uuid4().hex}"
    (root / "mongo").mkdir()
    with start_mongo_wire(root / "mongo") as mongo:
        settings = Settings(mongo_url=mongo.url, mongo_db="bench_api", redis_url=args.redis_url,
                            redis_namespace=f"clicktune-bench-{uuid.uuid4().hex[:8]}", chroma_path=str(root / "chroma"),
                            api_keys=[{"name": "bench", "sha256": hash_key(key), "scopes": ["admin"]}])
        db = mongo_database(settings.mongo_url, settings.mongo_db)
        dao = ClickstreamDAO(db)
        build_started = time.perf_counter()
        build_blue(settings, db, args.items, root)
        emit({"bench": "setup", "items": args.items, "index_seconds": round(time.perf_counter() - build_started, 1)})
        env = {**os.environ, "CLICKTUNE_MONGO_URL": mongo.url, "CLICKTUNE_MONGO_DB": settings.mongo_db,
               "CLICKTUNE_REDIS_URL": args.redis_url, "CLICKTUNE_REDIS_NAMESPACE": settings.redis_namespace,
               "CLICKTUNE_CHROMA_PATH": settings.chroma_path, "CLICKTUNE_API_KEYS": json.dumps(settings.api_keys),
               "CLICKTUNE_API_MAX_BODY_BYTES": str(64 * 1024 * 1024), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        api = start_api(env)
        summary: dict = {}
        try:
            with httpx.Client(base_url=api.url, headers={"X-API-Key": key}, timeout=300) as http:
                summary.update(bench_ingest(dao, http, args))
                summary.update(bench_search(settings, db, http, args))
        finally:
            api.stop()
        summary["targets"] = {"bulk_ingest_ratio_ge_0.5": summary["ingest_sessions_ratio"] >= 0.5,
                              "events_bulk_ratio_ge_0.5": summary["events_bulk_ratio"] >= 0.5,
                              "search_p50_le_50ms": summary["search_api_p50_ms"] <= 50}
        emit({"bench": "summary", **summary})


def bench_ingest(dao: ClickstreamDAO, http: httpx.Client, args) -> dict:
    # sessions with nested events: DAO baseline vs bulk requests (different ids, the same shape)
    direct, via_api = sessions(args.sessions, "dao", seed=1), sessions(args.sessions, "api", seed=2)
    started = time.perf_counter()
    for i in range(0, len(direct), args.chunk):
        report = dao.ingest(direct[i:i + args.chunk])
        assert not report.rejects, report.rejects[:3]
    dao_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(via_api), args.chunk):
        body = http.post("/v1/clickstream/records/bulk", json={"records": via_api[i:i + args.chunk]}).json()
        assert not body["rejected"], body["rejected"][:3]
    api_s = time.perf_counter() - started
    sessions_ratio = round(dao_s / api_s, 3)
    emit({"bench": "ingest_sessions", "sessions": args.sessions, "events": n_events(via_api), "chunk": args.chunk,
          "dao": {"seconds": round(dao_s, 3), "sessions_per_s": rate(args.sessions, dao_s),
                  "events_per_s": rate(n_events(direct), dao_s)},
          "api": {"seconds": round(api_s, 3), "sessions_per_s": rate(args.sessions, api_s),
                  "events_per_s": rate(n_events(via_api), api_s)},
          "api_vs_dao": sessions_ratio})

    # events of stored sessions, in bulk
    dao_events, api_events = loose_events(direct, 2, "late"), loose_events(via_api, 2, "late")
    chunk = args.chunk * 2
    started = time.perf_counter()
    for i in range(0, len(dao_events), chunk):
        assert not dao.push_events(dao_events[i:i + chunk]).rejects
    dao_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(api_events), chunk):
        assert not http.post("/v1/clickstream/events/bulk", json={"events": api_events[i:i + chunk]}).json()["rejected"]
    api_s = time.perf_counter() - started
    events_ratio = round(dao_s / api_s, 3)
    emit({"bench": "ingest_events_bulk", "events": len(api_events), "chunk": chunk,
          "dao": {"seconds": round(dao_s, 3), "events_per_s": rate(len(dao_events), dao_s)},
          "api": {"seconds": round(api_s, 3), "events_per_s": rate(len(api_events), api_s)}, "api_vs_dao": events_ratio})

    # one event per call
    dao_single, api_single = loose_events(direct, 1, "one")[:args.single_events], loose_events(via_api, 1, "one")[:args.single_events]
    started = time.perf_counter()
    for event in dao_single:
        assert dao.push_events([event]).accepted_events == 1
    dao_s = time.perf_counter() - started
    started = time.perf_counter()
    for event in api_single:
        response = http.post(f"/v1/clickstream/sessions/{event['session_id']}/events",
                             json={k: v for k, v in event.items() if k != "session_id"})
        assert response.status_code == 201, response.text
    api_s = time.perf_counter() - started
    emit({"bench": "ingest_events_single", "events": len(api_single),
          "dao": {"seconds": round(dao_s, 3), "events_per_s": rate(len(dao_single), dao_s)},
          "api": {"seconds": round(api_s, 3), "events_per_s": rate(len(api_single), api_s)},
          "api_vs_dao": round(dao_s / api_s, 3)})
    return {"ingest_sessions_ratio": sessions_ratio, "events_bulk_ratio": events_ratio,
            "events_single_ratio": round(dao_s / api_s, 3)}


def bench_search(settings: Settings, db, http: httpx.Client, args) -> dict:
    from worker.search import Searcher, SearchRequest

    rng = random.Random(11)
    queries = [" ".join(rng.sample(WORDS, 3)) for _ in range(args.queries)]
    searcher = Searcher(settings, db=db)
    for query in queries[:10]:  # warm-up: model load, first collection access
        searcher.search(SearchRequest(query=query))
        http.post("/v1/search", json={"query": query, "k": 10}).raise_for_status()
    direct = []
    for query in queries:
        started = time.perf_counter()
        searcher.search(SearchRequest(query=query, k=10))
        direct.append(time.perf_counter() - started)
    via_api, phases = [], {}
    for query in queries:
        started = time.perf_counter()
        response = http.post("/v1/search", json={"query": query, "k": 10})
        via_api.append(time.perf_counter() - started)
        assert response.status_code == 200 and len(response.json()["results"]) == 10
        for phase, ms in response.json()["timings_ms"].items():
            phases.setdefault(phase, []).append(ms)
    api_stats, direct_stats = percentiles(via_api), percentiles(direct)
    api_stats["server_phases_p50_ms"] = {phase: round(statistics.median(values), 2) for phase, values in phases.items()}
    emit({"bench": "search", "items": args.items, "k": 10, "direct": direct_stats, "api": api_stats})
    return {"search_api_p50_ms": api_stats["p50_ms"], "search_api_p99_ms": api_stats["p99_ms"],
            "search_direct_p50_ms": direct_stats["p50_ms"]}


if __name__ == "__main__":
    main()
