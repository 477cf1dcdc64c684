"""The shared engine of per-object sources (S3, GCS, local files): a bounded thread pool, retries,
the items cache and decoding. A source implements four small hooks:

- ``_locate(meta) -> str``: where the item lives (``bucket/key``); an :class:`ItemProblem` for bad meta;
- ``_fetch(meta, location, if_version) -> Fetched``: ONE attempt; ``Fetched(None, version)`` means "not
  modified since ``if_version``" (only asked when a cached entry exists);
- ``_decode(data, meta, location)``: bytes → item data (:class:`ItemProblem` when undecodable);
- ``_classify(exc) -> ErrorKind | None``: see :mod:`loaders.errors`.

Per item: cache lookup → (conditional) fetch with retries → cache store → decode. A permanent item
error or a transient one that outlived its retries becomes a :class:`LoadFailure`; a source error, or
an unreachable source after retries, stops the pool's remaining work and raises
:class:`SourceUnavailableError`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Sequence

from loaders.base import ItemsLoader, LoadStats, unique_metas
from loaders.cache import ItemsCache
from loaders.downloaded_item import DownloadedItem, LoadFailure, LoadResult
from loaders.errors import ErrorKind, ItemProblem, Redactor, SourceConfigError, SourceUnavailableError
from loaders.item_meta import ItemMeta
from loaders.retry import RetryPolicy, call_with_retries

logger = logging.getLogger("clicktune.loaders")


@dataclass(frozen=True)
class Fetched:
    """One fetch's answer: the bytes and their version, or ``data=None`` for "not modified"."""

    data: bytes | None
    version: str | None


MAX_LOCATION_BYTES = 4096


def _checked_location(location: object) -> str:
    """A location every client library can send: text, no NUL, valid Unicode, bounded."""
    if not isinstance(location, str):
        raise ItemProblem(f"item location is a {type(location).__name__}, not a string")
    if "\x00" in location:
        raise ItemProblem("item location contains a NUL byte")
    try:
        size = len(location.encode("utf-8"))
    except UnicodeError:
        raise ItemProblem("item location is not valid Unicode") from None
    if size > MAX_LOCATION_BYTES:
        raise ItemProblem(f"item location is {size} bytes, over the limit of {MAX_LOCATION_BYTES}")
    return location


class _Aborted:
    """Marks an item skipped because the source failed for another item."""


class ConcurrentObjectLoader(ItemsLoader):
    """Loads objects one request each, ``max_workers`` at a time, with retries and an optional cache.

    - ``max_workers``: threads (and HTTP connections) in flight; the pool lives until :meth:`close`.
    - ``retry``: the :class:`RetryPolicy` for transient errors.
    - ``cache``/``cache_revalidate``: see :mod:`loaders.cache`; ``cache_source`` namespaces the keys
      (loader kind + endpoint, so two S3 servers never share entries).
    - ``redactor``: scrubs secrets and endpoints from every reason and log line.
    """

    def __init__(
        self,
        *,
        max_workers: int,
        retry: RetryPolicy,
        cache: ItemsCache | None,
        cache_revalidate: bool,
        cache_source: str,
        redactor: Redactor,
    ) -> None:
        super().__init__()
        self.max_workers = max(1, max_workers)
        self.retry = retry
        self.cache = cache
        self.cache_revalidate = cache_revalidate
        self.cache_source = cache_source
        self.redact = redactor
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- hooks -------------------------------------------------------------------------------------
    @abstractmethod
    def _locate(self, meta: ItemMeta) -> str: ...

    def _bucket_of(self, meta: ItemMeta, configured: str | None) -> str:
        """The item's bucket: its meta's ``bucket``, else the loader's; a different one is refused, and
        so is one outside the operator's ``CLICKTUNE_LOADER_ALLOWED_BUCKETS`` (per item)."""
        bucket = meta.get("bucket") or configured
        if not bucket:
            raise ItemProblem("no bucket: neither the item's meta nor the loader config names one")
        if not isinstance(bucket, str):
            raise ItemProblem(f"bucket is a {type(bucket).__name__}, not a string")
        if configured and bucket != configured:
            raise ItemProblem(f"bucket {ascii(bucket)[:80]} is not the loader's bucket {configured!r}")
        settings = getattr(self, "settings", None)
        if settings is not None and not settings.bucket_allowed(bucket):
            from loaders.settings import bucket_refusal

            raise ItemProblem(bucket_refusal(bucket, settings.loader_allowed_buckets))
        return bucket

    @abstractmethod
    def _fetch(self, meta: ItemMeta, location: str, if_version: str | None) -> Fetched: ...

    @abstractmethod
    def _decode(self, data: bytes, meta: ItemMeta, location: str) -> Any: ...

    @abstractmethod
    def _classify(self, exc: BaseException) -> ErrorKind | None: ...

    # -- engine ------------------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix=f"loader-{self.source}")
            return self._pool

    def _kind(self, exc: BaseException) -> ErrorKind | None:
        return ErrorKind.ITEM if isinstance(exc, ItemProblem) else self._classify(exc)

    def load(self, metas: Sequence[ItemMeta]) -> LoadResult:
        unique = unique_metas(metas)
        self.stats = stats = LoadStats(requested=len(unique))
        started = time.perf_counter()
        if not unique:
            return LoadResult()
        stop = threading.Event()
        pool = self._executor()
        futures: dict[Future, int] = {pool.submit(self._load_item, meta, stop): i for i, meta in enumerate(unique)}
        outcomes: list[Any] = [None] * len(unique)
        try:
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
        result = LoadResult()
        for outcome in outcomes:
            if isinstance(outcome, DownloadedItem):
                result.items.append(outcome)
            elif isinstance(outcome, LoadFailure):
                result.failures.append(outcome)
        stats.add(loaded=len(result.items), failed=len(result.failures), seconds=time.perf_counter() - started)
        logger.info(
            "%s: loaded %d/%d items, %d failed (%d transient), %d from cache, %d requests, %d retries, %.2fs",
            self.source, stats.loaded, stats.requested, stats.failed,
            sum(f.transient for f in result.failures), stats.cache_hits, stats.requests, stats.retries, stats.seconds,
        )
        return result

    def _load_item(self, meta: ItemMeta, stop: threading.Event) -> DownloadedItem | LoadFailure | _Aborted:
        if stop.is_set():
            return _Aborted()
        try:
            location = _checked_location(self._locate(meta))
        except ItemProblem as exc:
            return LoadFailure(meta.object_id, self.redact(str(exc)), transient=False)
        except (ValueError, TypeError, UnicodeError, OSError) as exc:  # meta that cannot name an object
            return LoadFailure(meta.object_id, f"item location is malformed: {self.redact.describe(exc)}", transient=False)

        entry = self.cache.get(self.cache_source, location) if self.cache is not None else None
        if entry is not None and not self.cache_revalidate:
            self.stats.add(cache_hits=1)
            data = entry.data
        else:
            if_version = entry.version if entry is not None else None
            try:
                fetched = call_with_retries(
                    lambda: self._fetch(meta, location, if_version),
                    self._kind,
                    self.retry,
                    self.redact,
                    what=f"{self.source} {location}",
                    on_retry=lambda _exc: self.stats.add(retries=1),
                    abort=stop,
                )
            except Exception as exc:
                kind = self._kind(exc)
                if kind is None:
                    raise
                return self._failure_or_raise(meta, kind, exc, stop)
            if fetched.data is None and entry is not None:
                self.stats.add(cache_hits=1)
                data = entry.data
            elif fetched.data is None:
                return LoadFailure(meta.object_id, "source answered 'not modified' without a cached copy", True)
            else:
                data = fetched.data
                self.stats.add(bytes_downloaded=len(data))
                if self.cache is not None:
                    self.cache.put(self.cache_source, location, fetched.version, data)
        try:
            return DownloadedItem(meta.object_id, self._decode(data, meta, location), meta)
        except ItemProblem as exc:
            return LoadFailure(meta.object_id, str(exc), transient=False)

    def _failure_or_raise(self, meta: ItemMeta, kind: ErrorKind, exc: BaseException, stop: threading.Event) -> LoadFailure:
        described = self.redact.describe(exc)
        if kind is ErrorKind.SOURCE:
            stop.set()
            raise SourceConfigError(f"{self.source} source is unusable: {described}") from None
        if kind is ErrorKind.UNREACHABLE:
            stop.set()
            raise SourceUnavailableError(
                f"{self.source} source unreachable after {self.retry.max_attempts} attempts: {described}"
            ) from None
        if kind is ErrorKind.TRANSIENT:
            return LoadFailure(meta.object_id, f"{described} (gave up after {self.retry.max_attempts} attempts)", True)
        if isinstance(exc, ItemProblem):
            described = self.redact(str(exc))
        return LoadFailure(meta.object_id, described, transient=False)

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
