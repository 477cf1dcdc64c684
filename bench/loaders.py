"""Loader throughput: concurrent loader vs a plain serial get-loop, and PostgreSQL rows/s.

Starts its own real servers (moto S3, gcp-storage-emulator; PostgreSQL is the machine's, schema created
and dropped here) and prints one JSON line per measurement:

- ``s3`` / ``gcs``, ``network="local"``: straight to the server on 127.0.0.1 (no network latency at all:
  on a 2-core box both sides compete for the same CPUs, so this is the worst case for concurrency);
- ``network="rtt"``: through a real TCP proxy (its own process) that adds ``--latency-ms`` per request,
  like the round trip to a remote object store (the case the thread pool exists for);
- each with the serial baseline measured in the same run and ``ratio = serial_s / concurrent_s``;
- ``cache``: a second load of the same items from the items cache;
- ``pg``: ``--pg-rows`` rows read by id through the loader (batched), and a per-row SELECT loop on a
  sample as the baseline.

Usage: ``nice -n 10 python bench/loaders.py [--n 1000] [--latency-ms 20 ...] [--workers 16] [--pg-rows 100000]``

``client_cpu_ms_per_obj`` is the loader process's own CPU per object: with the servers on the same two
cores, ``concurrent_obj_per_s`` is bounded by their CPU, not by the loader.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loaders import ItemMeta, MemoryItemsCache, create_loader  # noqa: E402
from tests.fixtures.loaders import (  # noqa: E402
    gcs_admin_client,
    gcs_settings,
    s3_admin_client,
    s3_settings,
    start_proxy_process,
)
from worker.local_services import start_gcs_emulator, start_moto_s3  # noqa: E402

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def timed_cpu(fn):
    """Wall seconds and this process's CPU seconds (the client side only: servers are other processes)."""
    cpu = time.process_time()
    value, seconds = timed(fn)
    return value, seconds, time.process_time() - cpu


def bench_s3(n: int, workers: int, latencies_ms: list[float]) -> None:
    with start_moto_s3() as moto:
        admin = s3_admin_client(moto.url)
        admin.create_bucket(Bucket="bench")
        for i in range(n):
            admin.put_object(Bucket="bench", Key=f"docs/{i}.json", Body=json.dumps({"title": f"t{i}", "text": "x" * 200}).encode())
        metas = [ItemMeta(object_id=str(i)) for i in range(n)]
        config = {"source": "s3_json", "bucket": "bench", "key_template": "docs/{object_id}.json", "max_workers": workers}
        for network, latency in [("local", 0.0)] + [("rtt", ms / 1000) for ms in latencies_ms]:
            with start_proxy_process(moto.port, latency * 1000) as proxy:
                url = moto.url if network == "local" else proxy.url
                client = s3_admin_client(url)
                client.get_object(Bucket="bench", Key="docs/0.json")["Body"].read()  # warm the connection

                def serial():
                    return [json.loads(client.get_object(Bucket="bench", Key=f"docs/{i}.json")["Body"].read()) for i in range(n)]

                serial_items, serial_s = timed(serial)
                cache = MemoryItemsCache()
                loader = create_loader(config, s3_settings(url), cache=cache)
                result, concurrent_s, client_cpu_s = timed_cpu(lambda: loader.load(metas))
                assert len(result.items) == n == len(serial_items) and not result.failures
                emit(bench="loaders", store="s3", network=network, latency_ms=latency * 1000, objects=n, workers=workers,
                     serial_s=round(serial_s, 3), concurrent_s=round(concurrent_s, 3),
                     serial_obj_per_s=round(n / serial_s), concurrent_obj_per_s=round(n / concurrent_s),
                     ratio=round(serial_s / concurrent_s, 2), client_cpu_ms_per_obj=round(1000 * client_cpu_s / n, 2))
                cached = create_loader({**config, "cache_revalidate": False}, s3_settings(url), cache=cache)
                again, cached_s = timed(lambda: cached.load(metas))
                assert len(again.items) == n
                emit(bench="loaders", store="s3", network=network, case="cache", objects=n, second_load_s=round(cached_s, 3),
                     requests=cached.stats.requests, ratio_vs_concurrent=round(concurrent_s / cached_s, 1))
                loader.close()
                cached.close()


def bench_gcs(n: int, workers: int, latencies_ms: list[float]) -> None:
    with tempfile.TemporaryDirectory() as data_dir, start_gcs_emulator(data_dir) as server:
        admin = gcs_admin_client(server.url)
        bucket = admin.create_bucket("bench")
        for i in range(n):
            bucket.blob(f"texts/{i}.txt").upload_from_string(f"text number {i} " + "y" * 200)
        metas = [ItemMeta(object_id=str(i)) for i in range(n)]
        config = {"source": "gcs_text", "bucket": "bench", "blob_template": "texts/{object_id}.txt", "max_workers": workers}
        for network, latency in [("local", 0.0)] + [("rtt", ms / 1000) for ms in latencies_ms]:
            with start_proxy_process(server.port, latency * 1000) as proxy:
                url = server.url if network == "local" else proxy.url
                client_bucket = gcs_admin_client(url).bucket("bench")

                def serial():
                    return [client_bucket.blob(f"texts/{i}.txt").download_as_bytes().decode() for i in range(n)]

                serial_items, serial_s = timed(serial)
                loader = create_loader(config, gcs_settings(url), cache=None)
                result, concurrent_s, client_cpu_s = timed_cpu(lambda: loader.load(metas))
                assert len(result.items) == n == len(serial_items) and not result.failures
                emit(bench="loaders", store="gcs", network=network, latency_ms=latency * 1000, objects=n, workers=workers,
                     serial_s=round(serial_s, 3), concurrent_s=round(concurrent_s, 3),
                     serial_obj_per_s=round(n / serial_s), concurrent_obj_per_s=round(n / concurrent_s),
                     ratio=round(serial_s / concurrent_s, 2), client_cpu_ms_per_obj=round(1000 * client_cpu_s / n, 2))
                loader.close()


def bench_pg(rows: int, chunk_size: int, baseline_sample: int) -> None:
    import psycopg2
    from psycopg2 import sql
    from pydantic import SecretStr

    from loaders import LoaderSettings

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_DSN)
    admin.autocommit = True
    cur = admin.cursor()
    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        cur.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, title text, body text)").format(sql.Identifier(schema, "docs")))
        cur.execute(
            sql.SQL("INSERT INTO {} SELECT 'doc-' || i, 'Title ' || i, repeat('word ', 40) || i FROM generate_series(1, %s) i").format(
                sql.Identifier(schema, "docs")), (rows,))
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, "docs")))
        settings = LoaderSettings(pg_dsn=SecretStr(PG_DSN))
        metas = [ItemMeta(object_id=f"doc-{i}") for i in range(rows, 0, -1)]
        for source, extra in (("pg_text", {"text_column": "body"}), ("pg_multi_text", {"text_columns": ["title", "body"]})):
            loader = create_loader({"source": source, "schema": schema, "table": "docs", "chunk_size": chunk_size, **extra}, settings)
            result, seconds = timed(lambda: loader.load(metas))
            assert len(result.items) == rows and not result.failures
            loader.close()

            conn = psycopg2.connect(PG_DSN)  # baseline: one SELECT per id
            sample = [m.object_id for m in metas[:baseline_sample]]
            with conn.cursor() as c:
                query = sql.SQL("SELECT body FROM {} WHERE id = %s").format(sql.Identifier(schema, "docs"))

                def per_row():
                    for i in sample:
                        c.execute(query, (i,))
                        c.fetchone()

                _, per_row_s = timed(per_row)
            conn.close()
            emit(bench="loaders", store="pg", loader=source, rows=rows, chunk_size=chunk_size, seconds=round(seconds, 3),
                 rows_per_s=round(rows / seconds), queries=loader.stats.requests,
                 per_row_select_rows_per_s=round(baseline_sample / per_row_s), ratio=round((rows / seconds) / (baseline_sample / per_row_s), 1))
    finally:
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="objects per store")
    parser.add_argument("--workers", type=int, default=16, help="loader threads for S3")
    parser.add_argument("--gcs-workers", type=int, default=5,
                        help="loader threads for the GCS emulator: it serves one request at a time on a listen "
                             "backlog of 5, so more threads only overflow its backlog (1 s SYN retransmits)")
    parser.add_argument("--latency-ms", type=float, action="append",
                        help="per-request latency of an 'rtt' case (repeatable; default 20)")
    parser.add_argument("--pg-rows", type=int, default=100_000)
    parser.add_argument("--pg-chunk-size", type=int, default=1000)
    parser.add_argument("--pg-baseline-sample", type=int, default=2000)
    parser.add_argument("--only", choices=["s3", "gcs", "pg"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["s3", "gcs", "pg"])
    latencies = args.latency_ms or [20.0]
    if "s3" in only:
        bench_s3(args.n, args.workers, latencies)
    if "gcs" in only:
        bench_gcs(args.n, args.gcs_workers, latencies)
    if "pg" in only:
        bench_pg(args.pg_rows, args.pg_chunk_size, args.pg_baseline_sample)


if __name__ == "__main__":
    main()
