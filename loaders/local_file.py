"""Files on a local (or mounted) disk under one root directory, for single-machine use.

The path comes from meta ``path`` (relative to ``root_dir``) or ``path_template``. A path that resolves
outside ``root_dir`` (``..``, absolute paths, symlinks leading out) is refused per item. The version is
``mtime_ns-size``, so the cache (off by default) revalidates with a ``stat``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from loaders.cache import ItemsCache
from loaders.config import LocalFileLoaderConfig
from loaders.decoding import decode
from loaders.downloaded_item import LoadFailure
from loaders.errors import ErrorKind, ItemProblem, Redactor, SourceUnavailableError
from loaders.item_meta import ItemMeta
from loaders.object_store import ConcurrentObjectLoader, Fetched
from loaders.templates import render

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EIO, errno.ESTALE, errno.EBUSY})


class LocalFileLoader(ConcurrentObjectLoader):
    """Reads ``root_dir / path``; ``.json`` → dict, text → str, images → PIL (or as ``config.kind`` says)."""

    source = "local_file"

    def __init__(self, config: LocalFileLoaderConfig, settings: Any = None, cache: ItemsCache | None = None) -> None:
        super().__init__(
            max_workers=config.max_workers,
            retry=config.retry_policy(),
            cache=cache if config.cache else None,
            cache_revalidate=config.cache_revalidate,
            cache_source="local_file",
            redactor=Redactor(),
        )
        self.config = config
        self.root = Path(config.root_dir).expanduser().resolve()
        if not self.root.is_dir():
            raise SourceUnavailableError(f"local_file root_dir {config.root_dir!r} is not a directory")

    def _locate(self, meta: ItemMeta) -> str:
        relative = meta.get("path") or render(self.config.path_template, meta.object_id, meta.location)
        path = (self.root / str(relative)).resolve()
        if not path.is_relative_to(self.root):
            raise ItemProblem(f"path {relative!r} leads outside the loader's root directory")
        return str(path)

    def _fetch(self, meta: ItemMeta, location: str, if_version: str | None) -> Fetched:
        self.stats.add(requests=1)
        with open(location, "rb") as handle:
            stat = os.fstat(handle.fileno())
            version = f"{stat.st_mtime_ns}-{stat.st_size}"
            if if_version == version:
                return Fetched(None, version)
            return Fetched(handle.read(), version)

    def _classify(self, exc: BaseException) -> ErrorKind | None:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
            return ErrorKind.ITEM
        if isinstance(exc, OSError):
            return ErrorKind.TRANSIENT if exc.errno in _TRANSIENT_ERRNOS else ErrorKind.ITEM
        return None

    def _decode(self, data: bytes, meta: ItemMeta, location: str) -> Any:
        return decode(data, self.config.kind, location, self.config.encoding, self.config.image_mode)

    def _failure_or_raise(self, meta, kind, exc, stop):
        if isinstance(exc, OSError) and kind is ErrorKind.ITEM and exc.filename:
            relative = os.path.relpath(str(exc.filename), self.root)
            return LoadFailure(meta.object_id, f"{exc.strerror or type(exc).__name__}: {relative}", transient=False)
        return super()._failure_or_raise(meta, kind, exc, stop)
