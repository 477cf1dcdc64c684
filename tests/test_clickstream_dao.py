"""Clickstream DAO against the real Mongo wire server (nx-27017 over TCP): ingest with mixed
good/bad records, idempotent events and releases, concurrent releases, batch reads with exactly
their events, and the query count of a batch read (pymongo command monitoring)."""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timedelta, timezone

import pymongo
import pytest
from pymongo import monitoring

from dao.clickstream import ClickstreamDAO
from dao.clickstream_documents import ClickstreamSession, SessionRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def make_session(n: int, results: int = 5, clicks: tuple[int, ...] = (1,), prefix: str = "s") -> dict:
    """A valid import record: ``results`` shown items, clicks on the given 1-based ranks."""
    session_id = f"{prefix}{n}"
    objects = [f"doc-{n}-{rank}" for rank in range(1, results + 1)]
    return {
        "session_id": session_id,
        "search_query": f"query number {n}",
        "search_results": [{"object_id": o, "rank": r, "meta": {"path": f"{o}.json"}} for r, o in enumerate(objects, 1)],
        "search_meta": {"n": n},
        "user_id": f"user-{n % 7}",
        "created_at": (T0 + timedelta(seconds=n)).isoformat(),
        "events": [
            {"event_id": f"{session_id}-e{rank}", "object_id": objects[rank - 1], "created_at": (T0 + timedelta(seconds=n, milliseconds=10 * (len(clicks) - i))).isoformat()}
            for i, rank in enumerate(clicks)
        ],
    }


@pytest.fixture
def dao(mongo_db) -> ClickstreamDAO:
    return ClickstreamDAO(mongo_db)


def test_ingest_accepts_good_records_and_rejects_bad_ones_with_reasons(dao, mongo_db):
    good = make_session(1, clicks=(1, 3))
    bad_event = make_session(2, clicks=(2,))
    bad_event["events"].append({"event_id": "s2-ghost", "object_id": "not-shown", "created_at": T0.isoformat()})
    bad_event["events"].append({"event_id": "s2-notime", "object_id": "doc-2-1"})
    records = [
        good,                                                                      # 0 ok (2 events)
        {**make_session(3), "search_query": ""},                                   # 1 empty query
        {**make_session(4), "search_results": [{"object_id": "a", "rank": 1}, {"object_id": "b", "rank": 1}]},  # 2 repeated rank
        bad_event,                                                                 # 3 session ok, 1 event ok, 2 rejected
        {"event_id": "loose-1", "session_id": "s1", "object_id": "doc-1-2", "created_at": T0.isoformat()},     # 4 ok
        {"event_id": "loose-2", "session_id": "nope", "object_id": "doc-1-2", "created_at": T0.isoformat()},   # 5 unknown session
        {"event_id": "loose-3", "session_id": "s1", "object_id": "doc-9-9", "created_at": T0.isoformat()},     # 6 not shown
        ["not", "an", "object"],                                                   # 7
        {"hello": "world"},                                                        # 8 neither
        {**make_session(5), "created_at": "yesterday"},                            # 9 bad timestamp
        {**make_session(6), "surprise": 1},                                        # 10 unknown field
    ]
    report = dao.ingest(records, chunk_size=4)  # chunks split sessions from their later events
    assert report.accepted_sessions == 2 and report.accepted_events == 4
    assert [index for index, _ in report.rejects] == [1, 2, 3, 3, 5, 6, 7, 8, 9, 10]
    by_index: dict[int, list[str]] = {}
    for index, reason in report.rejects:
        by_index.setdefault(index, []).append(reason)
    assert "search_query" in by_index[1][0]
    assert "rank" in by_index[2][0]
    assert any("s2-ghost" in r and "not shown" in r for r in by_index[3])
    assert any("s2-notime" in r and "created_at" in r for r in by_index[3])
    assert "unknown session nope" in by_index[5][0]
    assert "doc-9-9" in by_index[6][0] and "not shown" in by_index[6][0]
    assert "not a JSON object" in by_index[7][0]
    assert "neither" in by_index[8][0]
    assert "created_at" in by_index[9][0]
    assert "surprise" in by_index[10][0]
    # nothing rejected was stored
    assert mongo_db.clickstream_sessions.count_documents({}) == 2
    assert sorted(e["event_id"] for e in mongo_db.clickstream_events.find()) == ["loose-1", "s1-e1", "s1-e3", "s2-e2"]
    batch = dao.open_batch()
    assert batch.session_count == 2 and batch.event_count == 4 and batch.writers == 0


def test_events_and_sessions_are_idempotent(dao, mongo_db):
    records = [make_session(n, clicks=(1, 2)) for n in range(1, 6)]
    first = dao.ingest(records)
    assert (first.accepted_sessions, first.accepted_events) == (5, 10)
    again = dao.ingest(records + [records[0]["events"][0] | {"session_id": "s1"}])
    assert (again.accepted_sessions, again.accepted_events, again.rejects) == (0, 0, [])
    assert (again.duplicate_sessions, again.duplicate_events) == (5, 11)
    assert mongo_db.clickstream_events.count_documents({}) == 10
    assert dao.open_batch().event_count == 10 and dao.open_batch().session_count == 5
    # an event pushed twice in one call is stored once
    pushed = dao.push_events([{"event_id": "x", "session_id": "s3", "object_id": "doc-3-4", "created_at": T0.isoformat()}] * 2)
    assert (pushed.accepted_events, pushed.duplicate_events) == (1, 1)
    assert "x" in {e.event_id for e in dao.get_session("s3").events}


def test_release_is_idempotent_and_the_next_session_opens_a_new_batch(dao):
    assert dao.release("nothing-yet") is None
    dao.ingest([make_session(n) for n in range(1, 4)])
    first = dao.release("r1")
    assert first.status.value == "released" and first.session_count == 3 and first.release_id == "r1"
    assert dao.release("r1").batch_id == first.batch_id
    assert dao.open_batch() is None
    assert dao.release("r2") is None  # nothing open: nothing released under r2
    stored = dao.register_session(make_session(10))
    assert stored.batch_id != first.batch_id and stored.session_number == 1
    assert dao.release("r1").batch_id == first.batch_id  # still the first batch
    second = dao.release("r2")
    assert second.batch_id == stored.batch_id and second.session_count == 1
    assert [b.batch_id for b in dao.list_batches()] == [first.batch_id, second.batch_id]
    assert [s.session_id for s in dao.iter_batch(first.batch_id)] == ["s1", "s2", "s3"]
    dao.ingest([make_session(11)])
    generated = dao.release()
    assert generated.release_id and generated.batch_id not in (first.batch_id, second.batch_id)


def _race(n_threads: int, target) -> list:
    barrier = threading.Barrier(n_threads)
    results: list = [None] * n_threads
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_concurrent_releases_with_the_same_id_release_one_batch(mongo_server, mongo_db_name, dao):
    clients = [pymongo.MongoClient(mongo_server.url) for _ in range(4)]
    try:
        daos = [ClickstreamDAO(client[mongo_db_name], ensure_indexes=False) for client in clients]
        for round_number in range(4):
            dao.ingest([make_session(n, prefix=f"r{round_number}-") for n in range(3)])
            got = _race(4, lambda i: daos[i].release(f"release-{round_number}"))
            assert all(batch is not None for batch in got)
            assert len({batch.batch_id for batch in got}) == 1
            assert dao.batches.count_documents({"release_id": f"release-{round_number}"}) == 1
            assert dao.open_batch() is None
        # different ids racing for one open batch: exactly one wins
        dao.ingest([make_session(99)])
        got = _race(4, lambda i: daos[i].release(f"different-{i}"))
        assert sum(batch is not None for batch in got) == 1
        assert dao.batches.count_documents({"status": "released"}) == 5
    finally:
        for client in clients:
            client.close()


def test_concurrent_writers_get_distinct_session_numbers(mongo_server, mongo_db_name, dao):
    clients = [pymongo.MongoClient(mongo_server.url) for _ in range(3)]
    try:
        daos = [ClickstreamDAO(client[mongo_db_name], ensure_indexes=False, chunk_size=25) for client in clients]
        reports = _race(3, lambda i: daos[i].ingest([make_session(n, prefix=f"w{i}-") for n in range(100)]))
    finally:
        for client in clients:
            client.close()
    assert sum(r.accepted_sessions for r in reports) == 300
    batch = dao.open_batch()
    numbers = [s.session_number for s in dao.iter_batch(batch.batch_id, page_size=64)]
    assert numbers == list(range(1, 301))
    assert batch.session_count == 300 and batch.next_session_number == 300 and batch.writers == 0


def test_release_waits_for_writers_still_inside_the_batch(dao):
    dao.ingest([make_session(1)])
    batch_id = dao.open_batch().batch_id
    dao.batches.update_one({"_id": batch_id}, {"$inc": {"writers": 1}})  # a writer mid-ingest
    released: list = []
    thread = threading.Thread(target=lambda: released.append(dao.release("drain")))
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and not released  # still waiting for the writer
    dao.batches.update_one({"_id": batch_id}, {"$inc": {"writers": -1}})
    thread.join(10)
    assert released[0].batch_id == batch_id and released[0].writers == 0
    impatient = ClickstreamDAO(dao.db, ensure_indexes=False, release_drain_timeout_s=0.2)
    dao.ingest([make_session(2)])
    dao.batches.update_one({"open_marker": "open"}, {"$inc": {"writers": 1}})  # a crashed writer
    assert impatient.release("crashed").writers == 1  # bounded wait, then released anyway


def test_iter_batch_returns_every_session_with_exactly_its_events_in_order(dao):
    first = [make_session(n, clicks=tuple(range(1, 1 + n % 4))) for n in range(1, 48)]
    assert dao.ingest(first, chunk_size=10).accepted_sessions == 47
    batch = dao.release("b1")
    other = [make_session(n, clicks=(1, 2), prefix="other-") for n in range(1, 10)]
    dao.ingest(other)
    # late clicks for a released batch's sessions attach to their session
    late = dao.push_events([{"event_id": "late", "session_id": "s5", "object_id": "doc-5-5", "created_at": (T0 + timedelta(days=1)).isoformat()}])
    assert late.accepted_events == 1

    for page_size in (1, 7, 47, 1000):
        sessions = list(dao.iter_batch(batch.batch_id, page_size=page_size))
        assert [s.session_id for s in sessions] == [r["session_id"] for r in first]
        assert [s.session_number for s in sessions] == list(range(1, 48))
        for session, record in zip(sessions, first):
            expected = {e["event_id"] for e in record["events"]} | ({"late"} if record["session_id"] == "s5" else set())
            assert {e.event_id for e in session.events} == expected
            assert all(e.session_id == session.session_id for e in session.events)
            times = [e.created_at for e in session.events]
            assert times == sorted(times)
            assert session.batch_id == batch.batch_id
    session = next(s for s in dao.iter_batch(batch.batch_id) if s.session_id == "s3")
    dumped = session.model_dump()
    assert dumped["search_query"] == "query number 3" and len(dumped["events"]) == 3
    assert dumped["search_results"][0] == {"object_id": "doc-3-1", "rank": 1, "meta": {"path": "doc-3-1.json"}}
    assert session.clicked_object_ids() == ["doc-3-3", "doc-3-2", "doc-3-1"]  # oldest click first
    assert list(dao.iter_batch("no-such-batch")) == []


class _CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(event.command_name)

    def succeeded(self, event) -> None:  # noqa: D401 - required by the interface
        pass

    def failed(self, event) -> None:
        pass


def test_batch_read_issues_a_number_of_queries_proportional_to_pages_not_sessions(mongo_server, mongo_db_name, dao):
    dao.ingest([make_session(n, results=10, clicks=(1, 2) if n % 2 else (3,)) for n in range(600)], chunk_size=200)
    batch = dao.release("counted")
    counter = _CommandCounter()
    client = pymongo.MongoClient(mongo_server.url, event_listeners=[counter])
    try:
        reader = ClickstreamDAO(client[mongo_db_name], ensure_indexes=False)
        reader.get_batch(batch.batch_id)  # connect before counting
        for page_size, pages in ((100, 6), (250, 3), (1000, 1)):
            counter.commands.clear()
            sessions = list(reader.iter_batch(batch.batch_id, page_size=page_size))
            assert len(sessions) == 600 and sum(len(s.events) for s in sessions) == 900
            reads = [c for c in counter.commands if c in ("find", "getMore", "aggregate")]
            # two queries per page (sessions + one $in for their events), one more to see the end
            # when the last page is full; never a query per session
            assert len(reads) <= 2 * pages + 1, (page_size, counter.commands)
            assert reads.count("find") >= pages and "getMore" not in reads
    finally:
        client.close()


def test_mark_irrelevant_get_session_and_export_round_trip(dao, mongo_server, tmp_path):
    records = [make_session(n, clicks=(2,)) for n in range(1, 21)]
    dao.ingest(records)
    assert dao.mark_irrelevant("s4") is True and dao.mark_irrelevant("missing") is False
    assert dao.get_session("s4").is_irrelevant is True and dao.get_session("missing") is None
    batch = dao.release("export")
    path = tmp_path / "batch.jsonl"
    assert dao.export_batch(batch.batch_id, path) == 20
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["session_id"] == "s1" and lines[0]["events"][0]["object_id"] == "doc-1-2"
    assert lines[3]["is_irrelevant"] is True
    with pytest.raises(KeyError):
        dao.export_batch("no-such-batch", io.StringIO())
    # the export re-imports as is into another store
    client = pymongo.MongoClient(mongo_server.url)
    try:
        other_db = client[f"{dao.db.name}_copy"]
        copy = ClickstreamDAO(other_db)
        report = copy.ingest(lines)
        assert (report.accepted_sessions, report.accepted_events, report.rejects) == (20, 20, [])
        copied = copy.release("copy")
        assert [s.model_dump(exclude={"batch_id"}) for s in copy.iter_batch(copied.batch_id)] == [
            s.model_dump(exclude={"batch_id"}) for s in dao.iter_batch(batch.batch_id)
        ]
    finally:
        client.drop_database(f"{dao.db.name}_copy")
        client.close()


def test_simulated_scifact_sessions_import_cleanly(dao, scifact_dir):
    from finetuning.datasets import BeirDataset
    from finetuning.simulation import simulate_sessions

    dataset = BeirDataset.load(scifact_dir).subset(n_queries=40, split="train", extra_docs=150, seed=0)
    sessions = simulate_sessions(dataset, top_k=10, sessions_per_query=2, seed=1)
    report = dao.ingest(sessions)
    assert report.rejects == [] and report.accepted_sessions == 80
    assert report.accepted_events == sum(len(s["events"]) for s in sessions) > 0
    stored = list(dao.iter_batch(dao.release("sim").batch_id))
    assert all(isinstance(s, ClickstreamSession) for s in stored)
    assert stored[0].search_meta["split"] == "train" and stored[0].search_results[0].meta["path"].endswith(".json")
    assert SessionRecord.model_validate(stored[0].model_dump(mode="json")).session_id == stored[0].session_id


def test_dwell_travels_from_the_import_to_the_training_input(dao):
    """A reported dwell in an event's meta, and the gap to the next event, reach the click model
    through the real store (what the fine-tuning job reads)."""
    from finetuning.inputs import sessions_to_inputs

    record = make_session(900, clicks=())
    objects = [r["object_id"] for r in record["search_results"]]
    at = lambda seconds: (T0 + timedelta(seconds=seconds)).isoformat()  # noqa: E731
    record["events"] = [
        {"event_id": "d1", "object_id": objects[0], "created_at": at(5), "meta": {"dwell_seconds": 4.5}},
        {"event_id": "d2", "object_id": objects[2], "created_at": at(12)},
        {"event_id": "d3", "object_id": objects[3], "created_at": at(80)},
    ]
    assert dao.ingest([record]).accepted_sessions == 1
    batch = dao.release("dwell")
    stored = [s.model_dump(mode="python") for s in dao.iter_batch(batch.batch_id)]
    item = sessions_to_inputs(stored)[0]
    assert item.click_dwell == {objects[0]: 4.5, objects[2]: 68.0}  # reported; the gap to the next click; the last unknown
