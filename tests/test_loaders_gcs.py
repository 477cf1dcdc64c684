"""GCS loader against a real gcp-storage-emulator (and a real TCP proxy for counting and faults)."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from loaders import GCPTextLoader, GcsTextLoaderConfig, ItemMeta, MemoryItemsCache, SourceUnavailableError, create_loader
from tests.fixtures.loaders import TcpProxy, gcs_admin_client, gcs_settings
from worker.local_services import start_gcs_emulator


def _upload(client, bucket_name: str, n: int) -> dict[str, str]:
    bucket = client.bucket(bucket_name)
    texts = {}
    for i in range(n):
        texts[f"t{i}"] = f"text number {i} — ünïcode"
        bucket.blob(f"texts/t{i}.txt").upload_from_string(texts[f"t{i}"])
    return texts


def test_text_loader_exact_items_and_failures(gcs_emulator, gcs_bucket):
    bucket, client = gcs_bucket
    texts = _upload(client, bucket, 200)
    client.bucket(bucket).blob("texts/latin1.txt").upload_from_string(b"caf\xe9")
    metas = [ItemMeta(object_id=f"t{i}") for i in range(200)] + [ItemMeta(object_id=f"gone{i}") for i in range(25)]
    metas += [ItemMeta(object_id="latin1"), ItemMeta.from_search_result("x", {"blob": "texts/t9.txt"})]
    config = {"source": "gcs_text", "bucket": bucket, "blob_template": "texts/{object_id}.txt", "max_workers": 8}
    with create_loader(config, gcs_settings(gcs_emulator.url), cache=None) as loader:
        result = loader.load(metas)
    assert result.ids == [f"t{i}" for i in range(200)] + ["x"]
    assert {item.id: item.data for item in result.items[:200]} == texts
    assert result.items[-1].data == texts["t9"]
    reasons = {f.id: f for f in result.failures}
    assert set(reasons) == {f"gone{i}" for i in range(25)} | {"latin1"}
    assert all("NotFound" in reasons[f"gone{i}"].reason and not reasons[f"gone{i}"].transient for i in range(25))
    assert "not valid utf-8" in reasons["latin1"].reason


def test_json_kind(gcs_emulator, gcs_bucket):
    bucket, client = gcs_bucket
    client.bucket(bucket).blob("d/1.json").upload_from_string(json.dumps({"title": "T", "text": "x"}))
    loader = GCPTextLoader(GcsTextLoaderConfig(bucket=bucket, blob_template="d/{object_id}.json", kind="json"),
                           gcs_settings(gcs_emulator.url))
    assert loader.load_one(ItemMeta(object_id="1")).data == {"title": "T", "text": "x"}


def test_missing_bucket_raises_source_error(gcs_emulator):
    loader = create_loader({"source": "gcs_text", "bucket": "no-such-bucket-ct"}, gcs_settings(gcs_emulator.url), cache=None)
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        loader.load([ItemMeta(object_id=str(i)) for i in range(30)])


@pytest.mark.slow
def test_emulator_restarted_mid_load(tmp_path):
    """The GCS server process is stopped and started again (same port, same data dir) during a load."""
    data_dir = tmp_path / "gcs"
    data_dir.mkdir()
    server = start_gcs_emulator(data_dir)
    port = server.port
    client = gcs_admin_client(server.url)
    client.create_bucket("restart")
    texts = _upload(client, "restart", 150)
    config = {"source": "gcs_text", "bucket": "restart", "blob_template": "texts/{object_id}.txt",
              "max_workers": 4, "max_attempts": 12, "backoff_initial_s": 0.1, "backoff_max_s": 1.0,
              "connect_timeout_s": 1.0, "read_timeout_s": 5.0}
    loader = create_loader(config, gcs_settings(server.url), cache=None)
    results: list = []
    errors: list = []

    def run() -> None:
        try:
            results.append(loader.load([ItemMeta(object_id=f"t{i}") for i in range(150)]))
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        while loader.stats.requests < 20 and worker.is_alive():
            threading.Event().wait(0.002)
        assert worker.is_alive(), "the load finished before the restart"
        server.stop()
        server = start_gcs_emulator(data_dir, port=port)
        worker.join(120)
    finally:
        server.stop()
        loader.close()
    assert not errors, errors
    result = results[0]
    assert result.failures == []
    assert {item.id: item.data for item in result.items} == texts
    assert loader.stats.retries >= 1


def object_requests(proxy: TcpProxy) -> int:
    """Requests for objects (downloads and object metadata). The client library also reads the bucket's
    metadata once per client in the background (for its tracing attributes); that is not an item read."""
    return sum("/o/" in line for line in proxy.request_lines)


def test_cache_second_task_issues_no_downloads(gcs_emulator, gcs_bucket):
    bucket, client = gcs_bucket
    texts = _upload(client, bucket, 40)
    metas = [ItemMeta(object_id=f"t{i}") for i in range(40)]
    cache = MemoryItemsCache()
    base = {"source": "gcs_text", "bucket": bucket, "blob_template": "texts/{object_id}.txt", "max_workers": 4}
    with TcpProxy(gcs_emulator.port) as proxy:  # counts HTTP requests reaching the server
        settings = gcs_settings(proxy.url)
        first = create_loader(base, settings, cache=cache)
        assert len(first.load(metas)) == 40
        assert object_requests(proxy) == 40

        proxy.reset_counters()
        second = create_loader({**base, "cache_revalidate": False}, settings, cache=cache)
        result = second.load(metas)
        assert {i.id: i.data for i in result.items} == texts
        assert object_requests(proxy) == 0 and second.stats.cache_hits == 40

        client.bucket(bucket).blob("texts/t3.txt").upload_from_string("new text")
        proxy.reset_counters()
        third = create_loader(base, settings, cache=cache)
        result = third.load(metas)
        assert result.by_id()["t3"].data == "new text"
        assert third.stats.cache_hits == 39  # metadata said "same CRC32C": no download for those
        assert third.stats.bytes_downloaded == len("new text")
        assert object_requests(proxy) == 41  # 40 metadata reads + 1 download


def test_endpoint_from_storage_emulator_host(monkeypatch, gcs_emulator, gcs_bucket, caplog):
    bucket, client = gcs_bucket
    _upload(client, bucket, 2)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    caplog.set_level(logging.DEBUG, logger="clicktune")
    loader = create_loader({"source": "gcs_text", "bucket": bucket, "blob_template": "texts/{object_id}.txt"}, cache=None)
    result = loader.load([ItemMeta(object_id="t1"), ItemMeta(object_id="t404")])
    assert result.ids == ["t1"]
    assert gcs_emulator.url not in caplog.text and gcs_emulator.url not in result.failures[0].reason
