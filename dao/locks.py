"""Lease-based locks in MongoDB (collection ``model_locks``), used to lock models during a reindex.

A lock is one document ``{_id: resource, owner, expires_at, expires_ms, acquired_at, renewed_at}``. It is held
by ``owner`` until ``expires_at``; the holder renews it (a heartbeat) while it works and deletes it
when done. A holder that crashes stops renewing, the lease runs out, and the next caller takes the
lock over — so a crashed worker can never leave a model locked forever.

Every operation is a single atomic MongoDB write, portable to the nx-27017 wire server:

- :meth:`LeaseLocks.acquire`: ``update_one({_id, $or: [{owner: me}, {expires_ms < now}]}, $set)``
  (re-entrant for the same owner, takes over an expired lease), and when no document matched,
  ``insert_one`` (a unique ``_id`` makes a racing second insert fail with ``DuplicateKeyError``).
  Of two racers exactly one wins.
- :meth:`LeaseLocks.renew`: ``update_one({_id, owner: me, expires_ms >= now}, $set expires)`` —
  a holder whose lease already ran out does not silently get it back; it must acquire again.
- :meth:`LeaseLocks.release`: ``delete_one({_id, owner: me})`` — never deletes someone else's lock.

Clocks: expiry is compared with the caller's UTC clock, so workers' clocks must agree to well
within a lease (NTP). Leases are tens of seconds; renewals every third of a lease. Comparisons use
``expires_ms`` (integer epoch milliseconds): date comparisons are not sub-second exact on every
server we run against (nx-27017), integers are. ``expires_at`` is kept for people reading the
document.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

log = logging.getLogger(__name__)

LOCKS_COLLECTION = "model_locks"

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def model_lock_name(model_ref: str) -> str:
    """The lock resource name for a model reference (run id, ``base:<name>`` …)."""
    return f"model:{model_ref}"


class LockInfo(BaseModel):
    """A lock document as stored."""

    model_config = ConfigDict(populate_by_name=True)

    resource: str = Field(alias="_id")
    owner: str
    expires_at: datetime
    expires_ms: int | None = None
    acquired_at: datetime | None = None
    renewed_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        if self.expires_ms is not None:
            return self.expires_ms <= _ms(now or utcnow())
        return _aware(self.expires_at) <= (now or utcnow())


class LockHeld(RuntimeError):
    """Raised by :meth:`LeaseLocks.acquire_all` when another owner holds a live lease."""

    def __init__(self, resource: str, holder: LockInfo | None) -> None:
        self.resource = resource
        self.holder = holder
        until = f" until {_aware(holder.expires_at).isoformat()}" if holder else ""
        who = f" by {holder.owner}" if holder else ""
        super().__init__(f"{resource} is locked{who}{until}")


class LeaseLocks:
    """Lease locks over one Mongo collection.

    Parameters:
        db: the pymongo database.
        collection_name: default ``model_locks``.
        clock: returns the current UTC time (tests may inject one); default :func:`utcnow`.
    """

    def __init__(self, db: Database, collection_name: str = LOCKS_COLLECTION, clock: Clock = utcnow) -> None:
        self.collection: Collection = db[collection_name]
        self.clock = clock

    def acquire(self, resource: str, owner: str, lease_seconds: float) -> bool:
        """Take ``resource`` for ``owner`` for ``lease_seconds``; ``False`` if someone else holds it."""
        now = self.clock()
        expires = now + timedelta(seconds=lease_seconds)
        fields = {"owner": owner, "expires_at": expires, "expires_ms": _ms(expires), "acquired_at": now,
                  "renewed_at": now}
        taken = self.collection.update_one(
            {"_id": resource, "$or": [{"owner": owner}, {"expires_ms": {"$lt": _ms(now)}}]},
            {"$set": fields},
        )
        if taken.matched_count:
            return True
        try:
            self.collection.insert_one({"_id": resource, **fields})
            return True
        except DuplicateKeyError:
            return False

    def acquire_all(self, resources: Iterable[str], owner: str, lease_seconds: float) -> list[str]:
        """Take every resource (in sorted order, duplicates ignored) or none.

        Returns the taken names. On a conflict, releases what it took and raises :class:`LockHeld`.
        """
        taken: list[str] = []
        for resource in sorted(set(resources)):
            if self.acquire(resource, owner, lease_seconds):
                taken.append(resource)
                continue
            holder = self.holder(resource)
            for name in taken:
                self.release(name, owner)
            raise LockHeld(resource, holder)
        return taken

    def renew(self, resource: str, owner: str, lease_seconds: float) -> bool:
        """Extend ``owner``'s live lease; ``False`` if it is no longer ours or already expired."""
        now = self.clock()
        expires = now + timedelta(seconds=lease_seconds)
        result = self.collection.update_one(
            {"_id": resource, "owner": owner, "expires_ms": {"$gte": _ms(now)}},
            {"$set": {"expires_at": expires, "expires_ms": _ms(expires), "renewed_at": now}},
        )
        return bool(result.matched_count)

    def release(self, resource: str, owner: str) -> bool:
        """Delete the lock if ``owner`` holds it; ``False`` otherwise (never touches others' locks)."""
        return bool(self.collection.delete_one({"_id": resource, "owner": owner}).deleted_count)

    def holder(self, resource: str) -> LockInfo | None:
        """The lock document (live or expired), or ``None``."""
        doc = self.collection.find_one({"_id": resource})
        return LockInfo.model_validate(doc) if doc else None

    def live_holder(self, resource: str) -> LockInfo | None:
        info = self.holder(resource)
        return info if info and not info.expired(self.clock()) else None

    def keep_alive(self, resources: Iterable[str], owner: str, lease_seconds: float,
                   interval: float | None = None) -> "LockKeeper":
        """A :class:`LockKeeper` renewing ``resources`` in a background thread (use as ``with``)."""
        return LockKeeper(self, list(resources), owner, lease_seconds, interval)


class LockKeeper:
    """Renews held leases every ``interval`` seconds (default a third of the lease) until stopped.

    ``lost`` is set when a renewal finds the lease gone (expired and taken over, or deleted); the
    holder must then stop before doing anything that needs the lock (e.g. switch the blue pointer).
    Leaving the ``with`` block stops the thread and releases every lease.
    """

    def __init__(self, locks: LeaseLocks, resources: list[str], owner: str, lease_seconds: float,
                 interval: float | None = None) -> None:
        self.locks = locks
        self.resources = resources
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else max(0.2, lease_seconds / 3)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper-{owner}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for resource in self.resources:
                try:
                    if not self.locks.renew(resource, self.owner, self.lease_seconds):
                        log.warning("lease on %s lost by %s", resource, self.owner)
                        self.lost.set()
                except Exception:  # a transient Mongo error: try again next tick; expiry is the backstop
                    log.exception("could not renew lease on %s", resource)

    def check(self) -> None:
        """Raise :class:`LockHeld` if any lease was lost."""
        if self.lost.is_set():
            raise LockHeld(", ".join(self.resources), None)

    def __enter__(self) -> "LockKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.interval * 2))
        for resource in self.resources:
            try:
                self.locks.release(resource, self.owner)
            except Exception:
                log.exception("could not release %s (its lease will expire)", resource)
