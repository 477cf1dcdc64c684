"""Blue pointer compare-and-set (dao/blue_pointer.py) against the real Mongo wire server."""

from __future__ import annotations

import threading

import pymongo

from dao.blue_pointer import BluePointer, BluePointers


def _first(pointers: BluePointers) -> BluePointer:
    pointer = BluePointer(collection="line-base-aaaa", model_ref="base:all-MiniLM-L6-v2",
                          loader={"source": "local_file", "root_dir": "/items"}, item_count=10)
    assert pointers.create(pointer)
    return pointer


def test_create_once_then_get(mongo_db):
    pointers = BluePointers(mongo_db)
    assert pointers.get() is None
    _first(pointers)
    assert not pointers.create(BluePointer(collection="other", model_ref="x"))  # name taken
    got = pointers.get()
    assert got.collection == "line-base-aaaa" and got.version == 1
    assert got.loader == {"source": "local_file", "root_dir": "/items"}
    assert [p.name for p in pointers.find_by_model("base:all-MiniLM-L6-v2")] == ["default"]
    assert pointers.find_by_model("nope") == []


def test_switch_is_compare_and_set(mongo_db):
    pointers = BluePointers(mongo_db)
    _first(pointers)
    assert pointers.switch("default", "line-base-aaaa", collection="line-run1-bbbb", model_ref="run1",
                           item_count=10, reindex_task_id="t1")
    got = pointers.get()
    assert (got.collection, got.model_ref, got.version) == ("line-run1-bbbb", "run1", 2)
    assert (got.previous_collection, got.previous_model_ref) == ("line-base-aaaa", "base:all-MiniLM-L6-v2")
    assert got.loader == {"source": "local_file", "root_dir": "/items"}  # kept when not given
    # a stale writer that started from the old collection loses and changes nothing
    assert not pointers.switch("default", "line-base-aaaa", collection="line-run2-cccc", model_ref="run2",
                               item_count=10)
    assert pointers.get().collection == "line-run1-bbbb"
    # expected model must match when given
    assert not pointers.switch("default", "line-run1-bbbb", collection="z-z-z", model_ref="run3",
                               item_count=1, expected_model_ref="wrong")
    assert pointers.get().version == 2
    # unknown deployment: nothing to switch
    assert not pointers.switch("other", "line-run1-bbbb", collection="q-q-q", model_ref="r", item_count=0)


def test_concurrent_switches_from_same_collection_one_wins(mongo_server, mongo_db):
    pointers = BluePointers(mongo_db)
    _first(pointers)
    results: dict[str, bool] = {}
    barrier = threading.Barrier(5)

    def switch(i: int) -> None:
        client = pymongo.MongoClient(mongo_server.url)
        try:
            mine = BluePointers(client[mongo_db.name])
            barrier.wait()
            results[f"new-{i}"] = mine.switch("default", "line-base-aaaa", collection=f"new-{i}",
                                              model_ref=f"run{i}", item_count=10)
        finally:
            client.close()

    threads = [threading.Thread(target=switch, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [name for name, ok in results.items() if ok]
    assert len(winners) == 1
    got = pointers.get()
    assert got.collection == winners[0] and got.version == 2
