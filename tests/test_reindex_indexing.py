"""worker/indexing.py: model references, collection names, the items config of `clicktune index`."""

from __future__ import annotations

import json

import pytest

from finetuning.model_ref import ModelRef
from worker.cli.items_config import ItemsConfig
from worker.indexing import new_collection_name
from worker.vector_store import validate_collection_name

RUN = "0123456789abcdef0123456789ABCDEF"


def test_model_references_are_normalized():
    assert ModelRef.canonical(RUN) == f"run:{RUN.lower()}"
    assert ModelRef.canonical(f"run:{RUN}") == f"run:{RUN.lower()}"
    assert ModelRef.canonical("base:all-MiniLM-L6-v2") == "base:all-MiniLM-L6-v2"
    assert ModelRef.canonical("models:/line@blue") == "models:/line@blue"
    assert ModelRef.canonical("dir:/tmp/m") == "dir:/tmp/m"
    assert ModelRef.parse(f"run:{RUN}").run_id == RUN.lower() and ModelRef.parse("base:x").run_id is None
    for bad in ["", "run:123", "base:", "whatever", "dir:"]:
        with pytest.raises(ValueError):
            ModelRef.canonical(bad)


def test_collection_names_are_valid_unique_and_readable():
    a = new_collection_name("default", f"run:{RUN.lower()}")
    b = new_collection_name("default", f"run:{RUN.lower()}")
    assert a != b and a.startswith("default-0123456789ab-")
    for line, ref in [("my line/α", "base:all-MiniLM-L6-v2"), ("-", "dir:/a/b/c..d"), ("x" * 600, "models:/n@blue")]:
        name = new_collection_name(line, ref)
        assert validate_collection_name(name) == name and len(name) <= 512


def test_items_config_sources(tmp_path):
    loader = {"source": "local_file", "root_dir": str(tmp_path)}
    inline = ItemsConfig.parse(json.dumps({"loader": loader, "items": [{"object_id": "a", "meta": {"path": "a.json"}}]}))
    assert [(i.object_id, i.meta) for i in inline.iter_items()] == [("a", {"path": "a.json"})]

    lines = tmp_path / "items.jsonl"
    lines.write_text('{"object_id": "x"}\n\n{"object_id": "y", "meta": {"id": 7}}\n')
    from_file = ItemsConfig(loader=loader, items_file=str(lines))
    assert [(i.object_id, i.meta) for i in from_file.iter_items()] == [("x", {}), ("y", {"id": 7})]

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d1.json").write_text("{}")
    (tmp_path / "d2.json").write_text("{}")
    config_file = tmp_path / "cfg.json"
    config_file.write_text(json.dumps({"loader": loader, "scan_directory": True, "pattern": "*.json"}))
    scanned = ItemsConfig.parse(str(config_file))
    assert sorted((i.object_id, i.meta["path"]) for i in scanned.iter_items()) == [
        ("cfg", "cfg.json"), ("d1", "sub/d1.json"), ("d2", "d2.json")]

    with pytest.raises(ValueError):
        ItemsConfig(loader=loader)  # no item source
    with pytest.raises(ValueError):
        ItemsConfig(loader=loader, items=[], scan_directory=True)  # two sources


def test_scan_directory_is_confined_to_the_allowed_roots(tmp_path, monkeypatch):
    from loaders.errors import SourceConfigError

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    for directory in (allowed, outside):
        (directory / "sub").mkdir(parents=True)
        (directory / "sub" / "a.txt").write_text("a")
    monkeypatch.setenv("CLICKTUNE_LOADER_ALLOWED_ROOTS", str(allowed))

    def scan(root) -> list:
        return list(ItemsConfig(loader={"source": "local_file", "root_dir": str(root)}, scan_directory=True).iter_items())

    assert [(i.object_id, i.meta) for i in scan(allowed / "sub")] == [("a", {"path": "a.txt"})]
    for root in (outside, allowed / ".." / "outside", "/"):
        with pytest.raises(SourceConfigError, match="CLICKTUNE_LOADER_ALLOWED_ROOTS"):
            scan(root)
    (outside / "link").symlink_to(allowed)  # a symlink into an allowed root is judged by its target
    assert len(scan(outside / "link")) == 1
    (allowed / "escape").symlink_to(outside)  # and one out of it is refused
    with pytest.raises(SourceConfigError, match="CLICKTUNE_LOADER_ALLOWED_ROOTS"):
        scan(allowed / "escape")
    with pytest.raises(SourceConfigError, match="not a directory"):
        scan(allowed / "sub" / "a.txt")
