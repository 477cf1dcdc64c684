"""Files on a local (or mounted) disk under one root directory, for single-machine use.

The path comes from meta ``path`` (relative to ``root_dir``) or ``path_template``. A path that resolves
outside ``root_dir`` (``..``, absolute paths, symlinks leading out) is refused per item, and so is a
malformed one (a NUL byte, not text, not encodable for the file system, too long): a failure of that
item with its reason, never an exception out of the loader. The version is ``mtime_ns-size``, so the
cache (off by default) revalidates with a ``stat``.

``root_dir`` itself must be a directory inside one of the operator's allowed roots
(``CLICKTUNE_LOADER_ALLOWED_ROOTS``); otherwise the loader is not built
(:class:`~loaders.errors.SourceConfigError`, permanent).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from loaders.cache import ItemsCache
from loaders.config import LocalFileLoaderConfig
from loaders.decoding import decode
from loaders.downloaded_item import LoadFailure
from loaders.errors import ErrorKind, ItemProblem, Redactor, SourceConfigError
from loaders.item_meta import ItemMeta
from loaders.object_store import ConcurrentObjectLoader, Fetched
from loaders.settings import LoaderSettings
from loaders.templates import render

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EIO, errno.ESTALE, errno.EBUSY})
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def check_relative_path(relative: object) -> str:
    """``relative`` as a path string, or :class:`ItemProblem` when it cannot name a file: not text, a
    NUL byte, not encodable for the file system (e.g. a lone surrogate), or over the OS limits."""
    if not isinstance(relative, str):
        raise ItemProblem(f"path is a {type(relative).__name__}, not a string")
    if not relative:
        raise ItemProblem("path is empty")
    if "\x00" in relative:
        raise ItemProblem("path contains a NUL byte")
    try:
        encoded = os.fsencode(relative)
    except UnicodeError:
        raise ItemProblem("path is not encodable for the file system (invalid Unicode)") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise ItemProblem(f"path is {len(encoded)} bytes, over the limit of {MAX_PATH_BYTES}")
    if any(len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")):
        raise ItemProblem(f"a path component is over {MAX_NAME_BYTES} bytes")
    return relative


class LocalFileLoader(ConcurrentObjectLoader):
    """Reads ``root_dir / path``; ``.json`` → dict, text → str, images → PIL (or as ``config.kind`` says)."""

    source = "local_file"

    def __init__(
        self, config: LocalFileLoaderConfig, settings: LoaderSettings | None = None, cache: ItemsCache | None = None
    ) -> None:
        super().__init__(
            max_workers=config.max_workers,
            retry=config.retry_policy(),
            cache=cache if config.cache else None,
            cache_revalidate=config.cache_revalidate,
            cache_source="local_file",
            redactor=Redactor(),
        )
        self.config = config
        self.root = (settings or LoaderSettings()).check_root(config.root_dir)
        if not self.root.is_dir():
            raise SourceConfigError(f"local_file root_dir {ascii(config.root_dir)[:120]} is not a directory")

    def _locate(self, meta: ItemMeta) -> str:
        relative = meta.get("path") or render(self.config.path_template, meta.object_id, meta.location)
        relative = check_relative_path(relative)
        try:
            path = (self.root / relative).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # e.g. a symlink loop
            raise ItemProblem(f"path cannot be resolved ({type(exc).__name__})") from None
        if not path.is_relative_to(self.root):
            raise ItemProblem(f"path {ascii(relative)[:120]} leads outside the loader's root directory")
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
