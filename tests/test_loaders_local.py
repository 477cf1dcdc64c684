"""LocalFileLoader on a real temp directory."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from loaders import ItemMeta, LocalFileLoader, LocalFileLoaderConfig, MemoryItemsCache, SourceUnavailableError, create_loader
from loaders.text import item_to_text


@pytest.fixture
def items_dir(tmp_path):
    root = tmp_path / "items"
    root.mkdir()
    for i in range(300):
        (root / f"{i}.json").write_text(json.dumps({"_id": str(i), "title": f"T{i}", "text": f"text {i}"}))
    (root / "notes.txt").write_text("plain text note")
    Image.new("L", (4, 3), 200).save(root / "pic.png")
    (root / "bad.json").write_text("{oops")
    (tmp_path / "secret.txt").write_text("outside the root")
    return root


def test_search_result_meta_paths_and_kinds(items_dir):
    metas = [ItemMeta.from_search_result(i, {"path": f"{i}.json"}) for i in range(300)]
    metas += [ItemMeta.from_search_result("note", {"path": "notes.txt"}), ItemMeta.from_search_result("pic", {"path": "pic.png"})]
    metas += [ItemMeta.from_search_result("gone", {"path": "gone.json"}), ItemMeta.from_search_result("bad", {"path": "bad.json"})]
    metas += [ItemMeta.from_search_result("escape", {"path": "../secret.txt"}), ItemMeta.from_search_result("abs", {"path": "/etc/hostname"})]
    loader = create_loader({"source": "local_file", "root_dir": str(items_dir)})
    result = loader.load(metas)
    loader.close()
    assert result.ids == [str(i) for i in range(300)] + ["note", "pic"]
    assert result.items[10].data == {"_id": "10", "title": "T10", "text": "text 10"}
    assert item_to_text(result.items[10]) == "T10. text 10"
    assert result.by_id()["note"].data == "plain text note"
    assert isinstance(result.by_id()["pic"].data, Image.Image) and result.by_id()["pic"].data.size == (4, 3)
    reasons = {f.id: f.reason for f in result.failures}
    assert reasons["gone"] == "No such file or directory: gone.json"
    assert "not valid JSON" in reasons["bad"]
    assert "outside the loader's root" in reasons["escape"] and "outside the loader's root" in reasons["abs"]
    assert not any(f.transient for f in result.failures)


def test_template_and_forced_kind(items_dir):
    config = LocalFileLoaderConfig(root_dir=str(items_dir), path_template="{object_id}.json", kind="bytes")
    with LocalFileLoader(config) as loader:
        item = loader.load_one(ItemMeta(object_id="3"))
        assert json.loads(item.data) == {"_id": "3", "title": "T3", "text": "text 3"}
        pages = list(loader.iter_pages([ItemMeta(object_id=str(i)) for i in range(25)], page_size=10))
    assert [len(page) for page in pages] == [10, 10, 5]


def test_cache_revalidates_by_mtime_and_size(items_dir):
    cache = MemoryItemsCache()
    config = {"source": "local_file", "root_dir": str(items_dir), "path_template": "{object_id}.json", "cache": True}
    metas = [ItemMeta(object_id=str(i)) for i in range(20)]
    first = create_loader(config, cache=cache)
    first.load(metas)
    assert first.stats.bytes_downloaded > 0
    (items_dir / "4.json").write_text(json.dumps({"title": "changed"}))
    os.utime(items_dir / "4.json", ns=(1, 1))  # a different mtime even on coarse clocks
    second = create_loader(config, cache=cache)
    result = second.load(metas)
    assert second.stats.cache_hits == 19
    assert result.by_id()["4"].data == {"title": "changed"}


def test_missing_root_is_a_source_error(tmp_path):
    with pytest.raises(SourceUnavailableError, match="not a directory"):
        create_loader({"source": "local_file", "root_dir": str(tmp_path / "nope")})
