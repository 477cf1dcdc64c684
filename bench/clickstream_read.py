"""Benchmark: ingest N synthetic sessions (10 results, ~1.5 events each), release the batch,
read it back page by page; compare with the per-session event fetch of the closest peer project.

    python bench/clickstream_read.py                      # 100k sessions on a local nx-27017 server
    python bench/clickstream_read.py --sessions 20000     # a smaller run on a busy machine
    python bench/clickstream_read.py --mongo-url mongodb://host:27017/ --db bench_clickstream

Prints JSON lines: ``ingest`` (sessions/s, events/s), ``read`` (sessions/s, queries issued =
find + getMore commands seen by pymongo command monitoring, pages), ``baseline_read`` (one events
query per session, on the first ``--baseline-sessions`` sessions) and ``summary`` with the ratio
read vs baseline (sessions/s) and the queries per 1,000 sessions of each.
No timing assertions: figures only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pymongo
from pymongo import monitoring

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dao.clickstream import ClickstreamDAO  # noqa: E402
from dao.clickstream_documents import ClickstreamSession  # noqa: E402
from worker.local_services import start_mongo_wire  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


class ReadCounter(monitoring.CommandListener):
    """Counts the read commands pymongo sends."""

    def __init__(self) -> None:
        self.reads = 0
        self.enabled = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.enabled and event.command_name in ("find", "getMore", "aggregate"):
            self.reads += 1

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def synthetic_sessions(n: int, seed: int, results: int = 10) -> Iterator[dict]:
    """Sessions of ``results`` items each; 0–3 clicks (mean 1.5) on position-biased ranks."""
    rng = random.Random(seed)
    for i in range(n):
        session_id = f"bench-{seed}-{i}"
        objects = [f"item-{rng.randrange(1_000_000)}-{rank}" for rank in range(1, results + 1)]
        clicks = sorted(rng.sample(range(results), rng.choice((0, 1, 2, 3))))
        created = T0 + timedelta(seconds=i)
        yield {
            "session_id": session_id,
            "search_query": f"synthetic query {rng.randrange(50_000)}",
            "search_results": [{"object_id": o, "rank": r, "meta": {"path": f"{o}.json"}} for r, o in enumerate(objects, 1)],
            "search_meta": {"source": "bench"},
            "user_id": f"user-{rng.randrange(5000)}",
            "created_at": created.isoformat(),
            "events": [
                {"event_id": f"{session_id}-{k}", "object_id": objects[c], "created_at": (created + timedelta(seconds=5 * (k + 1))).isoformat()}
                for k, c in enumerate(clicks)
            ],
        }


def baseline_read(dao: ClickstreamDAO, batch_id: str, limit: int) -> int:
    """The peer's pattern: page the sessions, then one events query per session."""
    count = 0
    for doc in dao.sessions.find({"batch_id": batch_id}, {"_id": 0}).sort("session_number", 1).limit(limit).batch_size(1000):
        events = sorted(dao.events.find({"session_id": doc["session_id"]}, {"_id": 0}), key=lambda e: (e["created_at"], e["event_id"]))
        ClickstreamSession.model_validate({**doc, "events": events})
        count += 1
    return count


def run(args: argparse.Namespace, url: str) -> None:
    counter = ReadCounter()
    client = pymongo.MongoClient(url, event_listeners=[counter], tz_aware=True)
    client.drop_database(args.db)
    dao = ClickstreamDAO(client[args.db], chunk_size=args.chunk_size)

    started = time.perf_counter()
    report = dao.ingest(synthetic_sessions(args.sessions, args.seed))
    ingest_s = time.perf_counter() - started
    batch = dao.release("bench")
    print(json.dumps({
        "bench": "clickstream_read", "phase": "ingest", "sessions": report.accepted_sessions, "events": report.accepted_events,
        "rejects": len(report.rejects), "seconds": round(ingest_s, 2),
        "sessions_per_s": round(report.accepted_sessions / ingest_s), "events_per_s": round(report.accepted_events / ingest_s),
        "chunk_size": args.chunk_size,
    }), flush=True)

    counter.reads, counter.enabled = 0, True
    started = time.perf_counter()
    sessions = events = pages = 0
    for page in dao.iter_batch_pages(batch.batch_id, page_size=args.page_size):
        pages += 1
        sessions += len(page)
        events += sum(len(s.events) for s in page)
    read_s = time.perf_counter() - started
    read_queries = counter.reads
    read_rate = sessions / read_s
    print(json.dumps({
        "bench": "clickstream_read", "phase": "read", "sessions": sessions, "events": events, "pages": pages,
        "page_size": args.page_size, "queries": read_queries, "seconds": round(read_s, 2), "sessions_per_s": round(read_rate),
        "target_sessions_per_s": 10_000,
    }), flush=True)

    # where the read time goes: the client's share (pydantic validation of one page, repeated)
    counter.enabled = False
    raw = list(dao.sessions.find({"batch_id": batch.batch_id}, {"_id": 0}).sort("session_number", 1).limit(args.page_size))
    raw_events: dict[str, list[dict]] = {doc["session_id"]: [] for doc in raw}
    for event in dao.events.find({"session_id": {"$in": list(raw_events)}}, {"_id": 0}):
        raw_events[event["session_id"]].append(event)
    started = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        for doc in raw:
            ClickstreamSession.model_validate({**doc, "events": raw_events[doc["session_id"]]})
    client_rate = repeats * len(raw) / (time.perf_counter() - started)
    print(json.dumps({
        "bench": "clickstream_read", "phase": "client_validation", "sessions_per_s": round(client_rate),
        "client_share_of_read_time": round(read_rate / client_rate, 3),
    }), flush=True)

    counter.reads, counter.enabled = 0, True
    started = time.perf_counter()
    baseline_sessions = baseline_read(dao, batch.batch_id, args.baseline_sessions)
    baseline_s = time.perf_counter() - started
    baseline_queries = counter.reads
    counter.enabled = False
    baseline_rate = baseline_sessions / baseline_s
    print(json.dumps({
        "bench": "clickstream_read", "phase": "baseline_read", "pattern": "one events query per session",
        "sessions": baseline_sessions, "queries": baseline_queries, "seconds": round(baseline_s, 2), "sessions_per_s": round(baseline_rate),
    }), flush=True)
    print(json.dumps({
        "bench": "clickstream_read", "phase": "summary", "sessions": args.sessions,
        "read_vs_baseline_speedup": round(read_rate / baseline_rate, 2),
        "queries_per_1000_sessions": round(1000 * read_queries / max(sessions, 1), 2),
        "baseline_queries_per_1000_sessions": round(1000 * baseline_queries / max(baseline_sessions, 1), 2),
        "ingest_sessions_per_s": round(report.accepted_sessions / ingest_s), "read_sessions_per_s": round(read_rate),
        "server": "external" if args.mongo_url else "nx-27017 (local, SQLite)",
    }), flush=True)
    client.drop_database(args.db)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000, help="synthetic sessions to ingest and read (default 100000)")
    parser.add_argument("--page-size", type=int, default=1000, help="sessions per read page (default 1000)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="records per ingest round trip (default 1000)")
    parser.add_argument("--baseline-sessions", type=int, default=2000, help="sessions read with the per-session pattern (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mongo-url", default=None, help="an existing server; default: start a local nx-27017")
    parser.add_argument("--db", default="bench_clickstream")
    args = parser.parse_args()
    if args.mongo_url:
        run(args, args.mongo_url)
        return
    with tempfile.TemporaryDirectory(prefix="clicktune-bench-mongo-") as data_dir:
        with start_mongo_wire(Path(data_dir)) as server:
            run(args, server.url)


if __name__ == "__main__":
    main()
