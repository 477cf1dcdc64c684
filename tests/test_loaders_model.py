"""ItemMeta, configs, settings, text extraction and the cache's bounds (no server involved)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from loaders import (
    DiskItemsCache,
    DownloadedItem,
    ItemMeta,
    LoaderSettings,
    MemoryItemsCache,
    S3JsonLoaderConfig,
    item_to_text,
    loader_config_to_dict,
    parse_loader_config,
)
from loaders.errors import Redactor
from loaders.templates import render


def test_item_meta_from_search_result():
    meta = ItemMeta.from_search_result(123, {"path": "123.json", "extra": 1})
    assert meta.object_id == "123" and meta.get("path") == "123.json" and meta.get("key", "d") == "d"
    assert ItemMeta.from_search_result("a", None).location == {}
    with pytest.raises(ValidationError):
        ItemMeta(object_id="")


def test_configs_round_trip_and_reject_secrets_and_unknown_sources():
    for config in (
        {"source": "local_file", "root_dir": "/data"},
        {"source": "s3_image", "bucket": "imgs", "key_template": "i/{object_id}.png", "max_workers": 32},
        {"source": "s3_text", "bucket": "b"},
        {"source": "s3_json"},
        {"source": "gcs_text", "bucket": "b", "blob_template": "{object_id}.txt"},
        {"source": "pg_text", "table": "docs", "schema": "public", "text_column": "body"},
        {"source": "pg_multi_text", "table": "docs", "text_columns": ["title", "body"]},
    ):
        parsed = parse_loader_config(config)
        assert parsed.source == config["source"]
        assert parse_loader_config(loader_config_to_dict(parsed)) == parsed
    assert parse_loader_config({"source": "pg_text", "table": "t", "schema": "s", "text_column": "c"}).db_schema == "s"
    with pytest.raises(ValidationError):
        parse_loader_config({"source": "s3_json", "bucket": "b", "aws_secret_access_key": "x"})
    with pytest.raises(ValidationError):
        parse_loader_config({"source": "ftp"})
    with pytest.raises(ValidationError):
        S3JsonLoaderConfig(key_template="{object_id.__class__}")
    with pytest.raises(ValidationError):
        parse_loader_config({"source": "pg_multi_text", "table": "t", "text_columns": []})


def test_templates():
    assert render("docs/{object_id}.json", "7", {}) == "docs/7.json"
    assert render("{lang}/{object_id}", "7", {"lang": "en"}) == "en/7"
    from loaders.errors import ItemProblem

    with pytest.raises(ItemProblem, match="lang"):
        render("{lang}/{object_id}", "7", {})


def test_settings_from_env_and_emulator_host(monkeypatch):
    monkeypatch.setenv("CLICKTUNE_AWS_SECRET_ACCESS_KEY", "very-secret")
    monkeypatch.setenv("CLICKTUNE_PG_DSN", "postgresql://u:dsn-pass@h/db")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    monkeypatch.delenv("CLICKTUNE_GCS_ENDPOINT_URL", raising=False)
    settings = LoaderSettings()
    assert settings.gcs_endpoint_url == "http://127.0.0.1:9023"
    assert "very-secret" not in repr(settings) and "dsn-pass" not in repr(settings)
    assert {"very-secret", "dsn-pass"} <= set(settings.secret_values())
    monkeypatch.setenv("CLICKTUNE_GCS_ENDPOINT_URL", "http://other:1")
    assert LoaderSettings().gcs_endpoint_url == "http://other:1"
    assert LoaderSettings(gcs_endpoint_url="http://x:2", aws_secret_access_key=SecretStr("k")).gcs_endpoint_url == "http://x:2"


def test_redactor():
    redact = Redactor(["topsecret"], {"http://10.0.0.1:9000": "<s3-endpoint>"})
    text = redact("key=topsecret url=http://10.0.0.1:9000/b/k other=https://user:pw@host/x dsn host=h password=abc")
    assert text == "key=*** url=<s3-endpoint>/b/k other=https://***@host/x dsn host=h password=***"


def test_a_connection_cut_below_the_client_library_is_transient_for_every_object_store():
    import http.client

    from urllib3.exceptions import ProtocolError

    from loaders.errors import ErrorKind
    from loaders.gcs import classify_gcs_error
    from loaders.s3 import classify_boto_error

    cut = ProtocolError("Connection broken: IncompleteRead(0 bytes read, 66 more expected)",
                        http.client.IncompleteRead(b"", 66))
    for classify in (classify_boto_error, classify_gcs_error):
        assert classify(cut) is ErrorKind.TRANSIENT
        assert classify(ConnectionResetError(104, "Connection reset by peer")) is ErrorKind.TRANSIENT
        assert classify(ValueError("a bug, not the network")) is None


def test_item_to_text():
    assert item_to_text(DownloadedItem("1", {"title": "A title.", "text": "Body"}, ItemMeta(object_id="1"))) == "A title. Body"
    assert item_to_text({"title": "T", "text": "B"}) == "T. B"
    assert item_to_text({"title": "T", "text": ""}) == "T"
    assert item_to_text({"name": "N", "description": "D", "_id": "x", "n": 3}) == "N. D"
    assert item_to_text({"a": "1", "b": "2", "c": "3"}, fields=["c", "a"], separator=" | ") == "3 | 1"
    assert item_to_text("plain") == "plain" and item_to_text(b"bytes") == "bytes"
    from PIL import Image

    with pytest.raises(TypeError, match="Image"):
        item_to_text(DownloadedItem("i", Image.new("L", (1, 1)), ItemMeta(object_id="i")))


def test_memory_cache_is_lru_bounded_by_bytes_and_count():
    cache = MemoryItemsCache(max_bytes=100, max_items=3)
    for i in range(3):
        cache.put("s", f"k{i}", "v1", b"x" * 30)
    assert cache.get("s", "k0") is not None  # k0 is now the most recent
    cache.put("s", "k3", "v1", b"y" * 30)  # count bound evicts the least recently used: k1
    assert cache.get("s", "k1") is None and cache.get("s", "k0").data == b"x" * 30
    cache.put("s", "big", "v", b"z" * 80)  # byte bound evicts until it fits
    assert cache.total_bytes <= 100 and cache.get("s", "big").version == "v"
    cache.put("s", "huge", "v", b"z" * 101)  # larger than the cache: not stored
    assert cache.get("s", "huge") is None
    assert cache.get("other-source", "big") is None  # keys are per source


def test_disk_cache_persists_and_evicts_least_recent(tmp_path):
    cache = DiskItemsCache(tmp_path, max_bytes=2000)
    for i in range(5):
        cache.put("s", f"k{i}", f"etag{i}", bytes([i]) * 300)
    reopened = DiskItemsCache(tmp_path, max_bytes=2000)
    assert reopened.get("s", "k2") == cache.get("s", "k2")
    assert reopened.get("s", "k2").version == "etag2"
    for i in range(5, 12):
        reopened.put("s", f"k{i}", "e", b"q" * 300)
    assert reopened.total_bytes <= 2000
    assert reopened.get("s", "k11") is not None
    assert reopened.get("s", "k0") is None  # oldest went first
