"""An items cache: raw bytes keyed by (source, location), valid for one version (ETag, generation, mtime).

A second task on the same items should not download them again. Loaders store the raw bytes they
fetched together with the version the source reported; on the next load they either

- trust the entry (``cache_revalidate=False``, for sources whose keys are immutable): no request at all, or
- revalidate it (default): a conditional or metadata request (S3 ``If-None-Match`` → 304 without a body,
  GCS metadata only, a local ``stat``) and download only when the version changed.

Two implementations share :class:`ItemsCache`: :class:`MemoryItemsCache` (per process, LRU bounded by bytes
and count) and :class:`DiskItemsCache` (a directory shared by processes, LRU by bytes; atomic writes).
:func:`shared_cache` returns one process-wide instance per settings so that loaders created for different
tasks share it. Entries hold no secrets: on disk, names are SHA-256 digests of the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CacheEntry:
    """Cached raw bytes and the source's version of them (``None`` when the source reports none)."""

    version: str | None
    data: bytes


def cache_key(source: str, location: str) -> str:
    """A fixed-length key (SHA-256 hex) for ``source`` (loader kind + endpoint) and ``location``."""
    return hashlib.sha256(f"{source}\x00{location}".encode()).hexdigest()


class ItemsCache(ABC):
    """Bounded, thread-safe store of :class:`CacheEntry` by key. ``hits``/``misses`` count ``get`` calls."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    @abstractmethod
    def _get(self, key: str) -> CacheEntry | None: ...

    @abstractmethod
    def _put(self, key: str, entry: CacheEntry) -> None: ...

    @abstractmethod
    def clear(self) -> None: ...

    def get(self, source: str, location: str) -> CacheEntry | None:
        entry = self._get(cache_key(source, location))
        with self._lock:
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
        return entry

    def put(self, source: str, location: str, version: str | None, data: bytes) -> None:
        self._put(cache_key(source, location), CacheEntry(version, bytes(data)))


class MemoryItemsCache(ItemsCache):
    """In-process LRU cache bounded by total bytes (``max_bytes``) and entry count (``max_items``)."""

    def __init__(self, max_bytes: int = 256 * 2**20, max_items: int | None = None) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _put(self, key: str, entry: CacheEntry) -> None:
        size = len(entry.data)
        if size > self.max_bytes:
            return  # larger than the whole cache: not worth evicting everything for it
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.total_bytes -= len(old.data)
            self._entries[key] = entry
            self.total_bytes += size
            while self._entries and (
                self.total_bytes > self.max_bytes or (self.max_items is not None and len(self._entries) > self.max_items)
            ):
                _, evicted = self._entries.popitem(last=False)
                self.total_bytes -= len(evicted.data)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.total_bytes = 0


class DiskItemsCache(ItemsCache):
    """A directory of entries (``<key[:2]>/<key>``), bounded by total bytes, least recently used evicted.

    Each file holds one JSON header line (``{"version": ...}``) then the raw bytes. Writes go to a temp
    file and are renamed into place, so concurrent processes never read half an entry. Recency is the
    file's mtime (touched on every hit). The size is tracked in memory and re-scanned at start; other
    processes' writes are picked up at the next eviction scan.
    """

    def __init__(self, directory: str | Path, max_bytes: int = 2 * 2**30) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.total_bytes = sum(size for _, size, _ in self._scan())

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def _scan(self) -> list[tuple[Path, int, int]]:
        found = []
        for path in self.directory.glob("??/*"):
            if path.name.startswith("."):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((path, stat.st_size, stat.st_mtime_ns))
        return found

    def _get(self, key: str) -> CacheEntry | None:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                header = json.loads(handle.readline())
                data = handle.read()
            _touch(path)
        except (FileNotFoundError, ValueError, OSError):
            return None
        return CacheEntry(header.get("version"), data)

    def _put(self, key: str, entry: CacheEntry) -> None:
        header = json.dumps({"version": entry.version}).encode() + b"\n"
        size = len(header) + len(entry.data)
        if size > self.max_bytes:
            return
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(header)
            handle.write(entry.data)
        try:
            old_size = path.stat().st_size
        except FileNotFoundError:
            old_size = 0
        os.replace(tmp, path)
        _touch(path)
        with self._lock:
            self.total_bytes += size - old_size
            if self.total_bytes > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        """Drop least recently used files until the total is at most 90% of the bound (lock held)."""
        # (mtime_ns is the recency: set by _touch on every put and hit)
        entries = sorted(self._scan(), key=lambda found: found[2])
        total = sum(size for _, size, _ in entries)
        target = int(self.max_bytes * 0.9)
        for path, size, _ in entries:
            if total <= target:
                break
            try:
                path.unlink()
                total -= size
            except FileNotFoundError:
                total -= size
        self.total_bytes = total

    def clear(self) -> None:
        with self._lock:
            for path, _, _ in self._scan():
                path.unlink(missing_ok=True)
            self.total_bytes = 0


def _touch(path: Path) -> None:
    """Mark as just used with a fine-grained clock (file-system timestamps can be a jiffy coarse)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


_shared: dict[tuple, ItemsCache] = {}
_shared_lock = threading.Lock()


def shared_cache(cache_dir: str | Path | None, max_bytes: int) -> ItemsCache | None:
    """The process-wide cache for these settings (``None`` when ``max_bytes`` is 0: caching off).

    ``cache_dir`` set → a :class:`DiskItemsCache` there (shared with other worker processes);
    otherwise an in-memory LRU cache.
    """
    if max_bytes <= 0:
        return None
    key = (str(Path(cache_dir).resolve()) if cache_dir else None, max_bytes)
    with _shared_lock:
        cache = _shared.get(key)
        if cache is None:
            cache = DiskItemsCache(cache_dir, max_bytes) if cache_dir else MemoryItemsCache(max_bytes)
            _shared[key] = cache
        return cache
