"""Lease locks (dao/locks.py) against the real Mongo wire server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import pymongo
import pytest

from dao.locks import LeaseLocks, LockHeld, model_lock_name


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_acquire_is_exclusive_and_reentrant(mongo_db):
    locks = LeaseLocks(mongo_db)
    name = model_lock_name("run-a")
    assert locks.acquire(name, "alice", 30)
    assert not locks.acquire(name, "bob", 30)
    assert locks.acquire(name, "alice", 30)  # the holder may re-acquire (extends)
    holder = locks.live_holder(name)
    assert holder is not None and holder.owner == "alice"
    assert not locks.release(name, "bob")  # never releases someone else's lock
    assert locks.live_holder(name).owner == "alice"
    assert locks.release(name, "alice")
    assert locks.holder(name) is None
    assert locks.acquire(name, "bob", 30)


def test_expired_lease_is_taken_over_and_old_holder_cannot_renew(mongo_db):
    clock = FakeClock()
    locks = LeaseLocks(mongo_db, clock=clock)
    assert locks.acquire("model:x", "crashed-worker", 10)
    clock.advance(5)
    assert not locks.acquire("model:x", "other", 10)
    assert locks.renew("model:x", "crashed-worker", 10)  # live: renew works, now until t=15
    clock.advance(9)
    assert not locks.acquire("model:x", "other", 10)
    clock.advance(2)  # t=16 > 15: expired
    assert locks.live_holder("model:x") is None
    assert locks.acquire("model:x", "other", 10)
    assert not locks.renew("model:x", "crashed-worker", 10)
    assert not locks.release("model:x", "crashed-worker")
    assert locks.holder("model:x").owner == "other"


def test_expired_lease_cannot_be_renewed_by_its_old_owner(mongo_db):
    clock = FakeClock()
    locks = LeaseLocks(mongo_db, clock=clock)
    assert locks.acquire("model:y", "slow", 1)
    clock.advance(2)
    assert not locks.renew("model:y", "slow", 1)  # must acquire again, it may have been taken


def test_acquire_all_is_all_or_nothing(mongo_db):
    locks = LeaseLocks(mongo_db)
    assert locks.acquire("model:b", "bob", 30)
    with pytest.raises(LockHeld) as info:
        locks.acquire_all(["model:c", "model:a", "model:b"], "alice", 30)
    assert info.value.holder.owner == "bob"
    assert "model:b" in str(info.value)
    assert locks.holder("model:a") is None  # released what it took before the conflict
    assert locks.holder("model:c") is None
    assert locks.release("model:b", "bob")
    assert locks.acquire_all(["model:b", "model:a", "model:a"], "alice", 30) == ["model:a", "model:b"]


def test_racing_acquirers_exactly_one_wins(mongo_server, mongo_db):
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def contend(owner: str) -> None:
        client = pymongo.MongoClient(mongo_server.url)
        try:
            locks = LeaseLocks(client[mongo_db.name])
            barrier.wait()
            if locks.acquire("model:race", owner, 30):
                winners.append(owner)
        finally:
            client.close()

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert LeaseLocks(mongo_db).holder("model:race").owner == winners[0]


def test_keeper_renews_then_releases(mongo_db):
    locks = LeaseLocks(mongo_db)
    locks.acquire_all(["model:k"], "keeper", 1.0)
    with locks.keep_alive(["model:k"], "keeper", 1.0, interval=0.2) as keeper:
        time.sleep(1.6)  # longer than the lease: only renewals keep it
        assert not locks.acquire("model:k", "intruder", 1.0)
        assert not keeper.lost.is_set()
        keeper.check()
    assert locks.holder("model:k") is None


def test_keeper_notices_a_lost_lease(mongo_db):
    locks = LeaseLocks(mongo_db)
    locks.acquire("model:l", "keeper", 5)
    with locks.keep_alive(["model:l"], "keeper", 5, interval=0.1) as keeper:
        mongo_db["model_locks"].update_one({"_id": "model:l"}, {"$set": {"owner": "thief"}})
        assert keeper.lost.wait(3)
        with pytest.raises(LockHeld):
            keeper.check()
    assert locks.holder("model:l").owner == "thief"  # leaving did not delete the thief's lock


def test_crashed_holder_process_does_not_lock_forever(mongo_server, mongo_db):
    """A separate process takes the lock, keeps renewing it, and is SIGKILLed; the lease then runs out."""
    code = textwrap.dedent(
        f"""
        import sys, time, pymongo
        from dao.locks import LeaseLocks
        locks = LeaseLocks(pymongo.MongoClient({mongo_server.url!r})[{mongo_db.name!r}])
        assert locks.acquire("model:crash", "doomed", 1.5)
        with locks.keep_alive(["model:crash"], "doomed", 1.5, interval=0.3):
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        locks = LeaseLocks(mongo_db)
        time.sleep(2.0)  # beyond one lease: still held, because the live process renews it
        assert not locks.acquire("model:crash", "next", 5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while not locks.acquire("model:crash", "next", 5):
            assert time.monotonic() < deadline, "the dead holder's lease never expired"
            time.sleep(0.1)
        assert locks.holder("model:crash").owner == "next"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
