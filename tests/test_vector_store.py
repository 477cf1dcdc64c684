"""The ChromaDB vector store: embedded PersistentClient and a real ``chroma run`` server over HTTP."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from worker.vector_store import (
    ChromaVectorStore,
    CollectionExists,
    CollectionNotFound,
    create_vector_store,
    validate_collection_name,
)


@pytest.fixture(params=["embedded", "http"])
def store(request, tmp_path):
    if request.param == "embedded":
        s = ChromaVectorStore.persistent(tmp_path / "chroma")
    else:
        server = request.getfixturevalue("chroma_server")
        s = ChromaVectorStore.http(server.extra["host"], server.extra["port"])
    yield s
    s.close()


def _name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_names_are_validated():
    assert validate_collection_name("line.run-1_abc") == "line.run-1_abc"
    for bad in ["ab", "-abc", "abc-", "a b c", "a/bc", "a..b", "x" * 513, "é-abc"]:
        with pytest.raises(ValueError):
            validate_collection_name(bad)


def test_create_upsert_count_query_iterate_delete(store):
    name = _name()
    store.create_collection(name, {"clicktune_model_ref": "base:x", "clicktune_loader": '{"source": "local_file"}'})
    assert store.collection_metadata(name)["clicktune_model_ref"] == "base:x"
    with pytest.raises(CollectionExists):
        store.create_collection(name)
    rng = np.random.default_rng(0)
    vectors = _unit(rng.normal(size=(25, 8))).astype("float32")
    ids = [f"doc{i}" for i in range(25)]
    metas = [{"clicktune_meta": f'{{"path": "doc{i}.json"}}'} for i in range(25)]
    store.upsert(name, ids[:10], vectors[:10], metas[:10])
    store.upsert(name, ids[10:], vectors[10:], metas[10:])
    store.upsert(name, ids[:3], vectors[:3], metas[:3])  # upsert, not duplicate
    assert store.count(name) == 25

    result = store.query(name, vectors[[4, 17]], k=3)
    assert [row[0] for row in result.ids] == ["doc4", "doc17"]
    assert result.distances[0][0] == pytest.approx(0.0, abs=1e-4)  # cosine distance to itself
    assert result.distances[0] == sorted(result.distances[0])
    assert result.metadatas[1][0]["clicktune_meta"] == '{"path": "doc17.json"}'

    pages = list(store.iter_items(name, page_size=7))
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    seen = {i: m for page in pages for i, m in zip(*page)}
    assert seen == dict(zip(ids, metas))

    assert name in store.list_collections()
    assert store.delete_collection(name)
    assert not store.delete_collection(name)
    assert name not in store.list_collections()
    with pytest.raises(CollectionNotFound):
        store.count(name)


def test_upsert_checks_lengths_and_accepts_tensors(store):
    import torch

    name = _name()
    store.create_collection(name)
    with pytest.raises(ValueError):
        store.upsert(name, ["a", "b"], np.ones((3, 4)))
    store.upsert(name, ["a", "b"], torch.eye(2, 4))
    assert store.query(name, torch.eye(1, 4), k=1).ids == [["a"]]
    store.delete_collection(name)


def test_upsert_larger_than_max_batch(tmp_path):
    store = ChromaVectorStore.persistent(tmp_path / "c")
    store._max_batch = 40  # force several chunks through the real client
    store.create_collection("big-one")
    store.upsert("big-one", [str(i) for i in range(130)], np.random.default_rng(1).normal(size=(130, 4)))
    assert store.count("big-one") == 130


def test_another_process_sees_the_embedded_collections(tmp_path):
    path = tmp_path / "shared"
    store = ChromaVectorStore.persistent(path)
    store.create_collection("old-col")
    store.upsert("old-col", ["a"], np.ones((1, 4)))
    code = textwrap.dedent(
        f"""
        import numpy as np
        from worker.vector_store import ChromaVectorStore
        s = ChromaVectorStore.persistent({str(path)!r})
        assert s.count("old-col") == 1
        s.create_collection("new-col")
        s.upsert("new-col", ["x", "y"], np.eye(2, 4))
        s.delete_collection("old-col")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert store.list_collections() == ["new-col"]
    assert store.count("new-col") == 2


def test_factory_picks_client_from_settings(tmp_path, chroma_server):
    class S:
        chroma_path = str(tmp_path / "emb")
        chroma_host = None
        chroma_port = 8000

    assert "embedded" in create_vector_store(S()).description

    class H(S):
        chroma_host = chroma_server.extra["host"]
        chroma_port = chroma_server.extra["port"]

    http = create_vector_store(H())
    assert "server" in http.description
    http.list_collections()  # really talks to the server
