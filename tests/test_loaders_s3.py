"""S3 loaders against a real moto server (and a real TCP proxy for network faults)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from PIL import Image

from loaders import (
    AwsS3ImageLoader,
    AwsS3JsonLoader,
    ItemMeta,
    MemoryItemsCache,
    S3ImageLoaderConfig,
    S3JsonLoaderConfig,
    SourceUnavailableError,
    create_loader,
    item_to_text,
)
from loaders.cache import DiskItemsCache
from tests.fixtures.loaders import ACCESS_KEY, SECRET_KEY, TcpProxy, s3_settings
from worker.local_services import free_port


def _put_docs(client, bucket: str, n: int, prefix: str = "docs/") -> dict[str, dict]:
    docs = {}
    for i in range(n):
        doc = {"_id": f"d{i}", "title": f"Title {i}", "text": f"body of document {i}"}
        client.put_object(Bucket=bucket, Key=f"{prefix}d{i}.json", Body=json.dumps(doc).encode())
        docs[f"d{i}"] = doc
    return docs


def _count_gets(loader) -> dict[str, int]:
    counter = {"GetObject": 0}

    def hook(**_kwargs):
        counter["GetObject"] += 1

    loader.client.meta.events.register("before-send.s3.GetObject", hook)
    return counter


def test_json_loader_exact_items_and_failures(moto_server, s3_bucket):
    bucket, client = s3_bucket
    docs = _put_docs(client, bucket, 250)
    client.put_object(Bucket=bucket, Key="docs/broken.json", Body=b"{not json")
    metas = [ItemMeta.from_search_result(f"d{i}", {}) for i in range(250)]
    metas += [ItemMeta.from_search_result(f"missing{i}", {}) for i in range(30)]
    metas.append(ItemMeta.from_search_result("broken", {}))
    metas.append(ItemMeta.from_search_result("d3", {}))  # a repeated id is loaded once
    metas.append(ItemMeta.from_search_result("explicit", {"key": "docs/d7.json"}))  # key from meta
    config = {"source": "s3_json", "bucket": bucket, "key_template": "docs/{object_id}.json", "max_workers": 8}

    with create_loader(config, s3_settings(moto_server.url), cache=None) as loader:
        result = loader.load(metas)

    assert result.ids == [f"d{i}" for i in range(250)] + ["explicit"]
    assert all(item.data == docs[item.id] for item in result.items[:250])
    assert result.items[-1].data == docs["d7"]
    assert item_to_text(result.items[0]) == "Title 0. body of document 0"
    failed = {f.id: f for f in result.failures}
    assert set(failed) == {f"missing{i}" for i in range(30)} | {"broken"}
    assert all("NoSuchKey" in failed[f"missing{i}"].reason and not failed[f"missing{i}"].transient for i in range(30))
    assert "not valid JSON" in failed["broken"].reason
    assert loader.stats.requests == 282  # one GET per distinct item, no retries
    assert loader.stats.retries == 0


def test_image_loader_decodes_pil_and_reports_corrupt(moto_server, s3_bucket):
    bucket, client = s3_bucket
    colors = {}
    for i in range(12):
        color = (i * 20, 255 - i * 20, 7)
        buffer = io.BytesIO()
        Image.new("RGB", (8 + i, 6), color).save(buffer, format="PNG")
        client.put_object(Bucket=bucket, Key=f"img/{i}.png", Body=buffer.getvalue())
        colors[str(i)] = color
    client.put_object(Bucket=bucket, Key="img/bad.png", Body=b"\x89PNG not really")
    config = S3ImageLoaderConfig(bucket=bucket, key_template="img/{object_id}.png", image_mode="RGB")
    loader = AwsS3ImageLoader(config, s3_settings(moto_server.url))
    result = loader.load([ItemMeta(object_id=str(i)) for i in range(12)] + [ItemMeta(object_id="bad"), ItemMeta(object_id="gone")])
    loader.close()
    assert [item.id for item in result.items] == [str(i) for i in range(12)]
    for item in result.items:
        assert isinstance(item.data, Image.Image)
        assert item.data.size == (8 + int(item.id), 6)
        assert item.data.getpixel((0, 0)) == colors[item.id]
    reasons = {f.id: f.reason for f in result.failures}
    assert "not a decodable image" in reasons["bad"]
    assert "NoSuchKey" in reasons["gone"]


def test_meta_bucket_other_than_config_is_refused(moto_server, s3_bucket):
    bucket, client = s3_bucket
    client.put_object(Bucket=bucket, Key="a", Body=b"{}")
    loader = AwsS3JsonLoader(S3JsonLoaderConfig(bucket=bucket), s3_settings(moto_server.url))
    result = loader.load([ItemMeta.from_search_result("a", {"bucket": "someone-elses", "key": "a"}), ItemMeta(object_id="a")])
    assert result.ids == []  # the repeated id "a" counts once: the first (foreign) meta wins and is refused
    assert "not the loader's bucket" in result.failures[0].reason


def test_request_that_times_out_once_is_retried(moto_server, s3_bucket):
    bucket, client = s3_bucket
    docs = _put_docs(client, bucket, 40)
    with TcpProxy(moto_server.port) as proxy:
        proxy.stall_next(1, 3.0)  # the first request hangs longer than the read timeout
        config = {"source": "s3_json", "bucket": bucket, "key_template": "docs/{object_id}.json",
                  "read_timeout_s": 0.5, "backoff_initial_s": 0.05, "max_workers": 4}
        loader = create_loader(config, s3_settings(proxy.url), cache=None)
        result = loader.load([ItemMeta(object_id=f"d{i}") for i in range(40)])
        loader.close()
    assert result.failures == []
    assert {item.id: item.data for item in result.items} == docs
    assert loader.stats.retries >= 1
    assert loader.stats.requests == 40 + loader.stats.retries


def test_dropped_connections_mid_load_are_retried(moto_server, s3_bucket):
    """Every live connection is cut while the load runs (a server/LB restart): the load still completes."""
    bucket, client = s3_bucket
    docs = _put_docs(client, bucket, 120)
    with TcpProxy(moto_server.port, latency_s=0.01) as proxy:
        config = {"source": "s3_json", "bucket": bucket, "key_template": "docs/{object_id}.json",
                  "backoff_initial_s": 0.05, "max_workers": 4, "max_attempts": 6,
                  # a request caught half-open by the cut waits for this before it is retried
                  "read_timeout_s": 5.0}
        loader = create_loader(config, s3_settings(proxy.url), cache=None)
        import threading

        done = threading.Event()
        results: list = []

        def load() -> None:
            try:
                results.append(loader.load([ItemMeta(object_id=f"d{i}") for i in range(120)]))
            except BaseException as exc:  # reported below, not lost in the thread
                results.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=load)
        worker.start()
        cut = 0
        while not done.is_set() and cut < 3:
            if loader.stats.requests >= 20 * (cut + 1):
                proxy.drop_connections()
                cut += 1
            done.wait(0.005)
        worker.join(120)
        loader.close()
    assert cut >= 1, "the load finished before any connection could be cut"
    assert results, f"the load gave no result within 120 s ({loader.stats})"
    result = results[0]
    assert not isinstance(result, BaseException), f"the load raised {result!r}"
    assert result.failures == []
    assert {item.id: item.data for item in result.items} == docs


def test_a_response_cut_mid_body_is_retried(moto_server, s3_bucket):
    """A response cut after its headers (the connection dies mid-body) is retried, and the object loads.

    Regression: reading the body through ``with response["Body"]`` got the bare urllib3 stream, whose
    ``ProtocolError`` escaped the retry policy and failed the whole load."""
    bucket, client = s3_bucket
    docs = _put_docs(client, bucket, 2)
    with TcpProxy(moto_server.port) as proxy:
        config = {"source": "s3_json", "bucket": bucket, "key_template": "docs/{object_id}.json",
                  "backoff_initial_s": 0.01, "max_attempts": 4, "max_workers": 1}
        loader = create_loader(config, s3_settings(proxy.url), cache=None)
        proxy.truncate_next(2)
        result = loader.load([ItemMeta(object_id="d1")])
        loader.close()
    assert (proxy.truncated, loader.stats.retries) == (2, 2), (result, loader.stats)
    assert result.failures == [] and result.items[0].data == docs["d1"]


def test_transient_error_that_persists_is_reported_per_item(moto_server, s3_bucket):
    """A request that keeps timing out gives up after max_attempts: a transient failure for that item only."""
    bucket, client = s3_bucket
    _put_docs(client, bucket, 3)
    with TcpProxy(moto_server.port) as proxy:
        config = {"source": "s3_json", "bucket": bucket, "key_template": "docs/{object_id}.json",
                  "read_timeout_s": 0.3, "backoff_initial_s": 0.01, "max_attempts": 2, "max_workers": 1}
        loader = create_loader(config, s3_settings(proxy.url), cache=None)
        proxy.stall_next(2, 1.5)  # the first item's two attempts both stall
        result = loader.load([ItemMeta(object_id=f"d{i}") for i in range(3)])
        loader.close()
    assert result.ids == ["d1", "d2"]
    assert [f.id for f in result.failures] == ["d0"]
    assert result.failures[0].transient and "gave up after 2 attempts" in result.failures[0].reason


def test_missing_bucket_raises_source_error(moto_server):
    loader = create_loader({"source": "s3_text", "bucket": "no-such-bucket-ct"}, s3_settings(moto_server.url), cache=None)
    with pytest.raises(SourceUnavailableError, match="NoSuchBucket"):
        loader.load([ItemMeta(object_id=str(i)) for i in range(50)])
    loader.close()


def test_unreachable_endpoint_raises_without_secrets(caplog):
    dead = f"http://127.0.0.1:{free_port()}"
    config = {"source": "s3_text", "bucket": "b", "max_attempts": 2, "backoff_initial_s": 0.01, "connect_timeout_s": 0.5}
    loader = create_loader(config, s3_settings(dead), cache=None)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceUnavailableError) as raised:
        loader.load([ItemMeta(object_id=str(i)) for i in range(20)])
    loader.close()
    message = str(raised.value)
    assert "unreachable after 2 attempts" in message
    assert SECRET_KEY not in message and dead not in message and "<s3-endpoint>" in message
    assert SECRET_KEY not in caplog.text


def test_secret_key_never_logged(moto_server, s3_bucket, caplog):
    bucket, client = s3_bucket
    _put_docs(client, bucket, 10)
    caplog.set_level(logging.DEBUG)  # every logger, botocore's included
    with TcpProxy(moto_server.port) as proxy:
        proxy.stall_next(1, 2.0)
        config = {"source": "s3_json", "bucket": bucket, "key_template": "docs/{object_id}.json",
                  "read_timeout_s": 0.4, "backoff_initial_s": 0.01, "max_workers": 2}
        loader = create_loader(config, s3_settings(proxy.url), cache=None)
        result = loader.load([ItemMeta(object_id=f"d{i}") for i in range(10)] + [ItemMeta(object_id="nope")])
        loader.close()
    assert len(result.items) == 10 and loader.stats.retries >= 1
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert SECRET_KEY not in caplog.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("clicktune"))
    assert "retrying" in ours and "loaded 10/11" in ours
    assert ACCESS_KEY not in ours and proxy.url not in ours
    assert all(SECRET_KEY not in f.reason and proxy.url not in f.reason for f in result.failures)
    assert SECRET_KEY not in repr(loader.config) and SECRET_KEY not in str(s3_settings(proxy.url))


def test_cache_second_load_downloads_nothing(moto_server, s3_bucket):
    bucket, client = s3_bucket
    docs = _put_docs(client, bucket, 60)
    metas = [ItemMeta(object_id=f"d{i}") for i in range(60)]
    cache = MemoryItemsCache(max_bytes=10 * 2**20)
    base = {"source": "s3_json", "bucket": bucket, "key_template": "docs/{object_id}.json", "max_workers": 8}
    settings = s3_settings(moto_server.url)

    first = create_loader(base, settings, cache=cache)
    gets = _count_gets(first)
    assert len(first.load(metas)) == 60 and gets["GetObject"] == 60

    trusting = create_loader({**base, "cache_revalidate": False}, settings, cache=cache)  # a second task
    gets = _count_gets(trusting)
    result = trusting.load(metas)
    assert {i.id: i.data for i in result.items} == docs
    assert gets["GetObject"] == 0 and trusting.stats.cache_hits == 60

    client.put_object(Bucket=bucket, Key="docs/d5.json", Body=json.dumps({"title": "changed"}).encode())
    revalidating = create_loader(base, settings, cache=cache)
    gets = _count_gets(revalidating)
    result = revalidating.load(metas)
    assert gets["GetObject"] == 60  # conditional GETs (If-None-Match) ...
    assert revalidating.stats.cache_hits == 59  # ... 59 answered 304 Not Modified, without a body
    assert revalidating.stats.bytes_downloaded == len(json.dumps({"title": "changed"}))
    assert result.by_id()["d5"].data == {"title": "changed"}
    for loader in (first, trusting, revalidating):
        loader.close()


def test_disk_cache_is_shared_between_loaders_and_bounded(moto_server, s3_bucket, tmp_path):
    bucket, client = s3_bucket
    _put_docs(client, bucket, 30)
    metas = [ItemMeta(object_id=f"d{i}") for i in range(30)]
    config = {"source": "s3_json", "bucket": bucket, "key_template": "docs/{object_id}.json", "cache_revalidate": False}
    settings = s3_settings(moto_server.url)
    first = create_loader(config, settings, cache=DiskItemsCache(tmp_path / "cache"))
    first.load(metas)
    second = create_loader(config, settings, cache=DiskItemsCache(tmp_path / "cache"))  # e.g. another process
    gets = _count_gets(second)
    assert len(second.load(metas)) == 30 and gets["GetObject"] == 0

    small = DiskItemsCache(tmp_path / "small", max_bytes=1000)
    third = create_loader(config, settings, cache=small)
    third.load(metas)
    assert 0 < small.total_bytes <= 1000
    assert len(list((tmp_path / "small").glob("??/*"))) < 30
