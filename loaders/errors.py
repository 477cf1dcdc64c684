"""Errors of the loaders and the classification that drives retries.

Every exception a source raises is sorted into one :class:`ErrorKind`:

- ``TRANSIENT``: may succeed if tried again (timeouts, 5xx, throttling, a dropped connection). Retried
  with backoff; if retries run out the item is reported as a transient failure.
- ``UNREACHABLE``: the source itself cannot be reached (connection refused, DNS, connect timeout).
  Retried like a transient error; if retries run out the whole load raises
  :class:`SourceUnavailableError` — every other item would fail the same way.
- ``ITEM``: permanent for this item only (missing object, undecodable bytes). Reported, not retried.
- ``SOURCE``: the source is unusable (bad credentials, missing bucket/table/column). Raised at once as
  :class:`SourceConfigError` (``permanent = True``); an unreachable source after its retries raises
  :class:`SourceUnavailableError` (``permanent = False``).
"""

from __future__ import annotations

import enum
import re
from typing import Iterable


class ErrorKind(enum.Enum):
    TRANSIENT = "transient"
    UNREACHABLE = "unreachable"
    ITEM = "item"
    SOURCE = "source"

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.TRANSIENT, ErrorKind.UNREACHABLE)


def is_dropped_connection(exc: BaseException) -> bool:
    """True for a connection cut mid-response below the client library (urllib3 / http.client / socket).

    Client libraries usually wrap these (botocore's ``ResponseStreamingError``, requests'
    ``ChunkedEncodingError``), but not on every path: a bare urllib3 stream, or an error body read by
    the library itself, lets ``ProtocolError('Connection broken: IncompleteRead ...')`` through as it
    is. A reset or a truncated response is worth another try, so every source treats it as transient.
    """
    import http.client

    from urllib3.exceptions import ProtocolError

    return isinstance(exc, (ProtocolError, http.client.IncompleteRead, http.client.RemoteDisconnected,
                            ConnectionResetError, ConnectionAbortedError, BrokenPipeError))


class LoaderError(Exception):
    """Base of the loaders' own exceptions."""


class SourceUnavailableError(LoaderError):
    """The source cannot be used at all (credentials, missing bucket/table, unreachable after retries).

    The message names the source and the cause, never a secret. ``permanent`` says whether trying
    again later can help: ``False`` here (the source was unreachable or kept failing transiently —
    a later attempt may find it back), ``True`` for :class:`SourceConfigError`. Whoever runs the
    load (the worker's retry rule) reads the attribute; it never has to parse the message.
    """

    permanent: bool = False


class SourceConfigError(SourceUnavailableError):
    """The task or the deployment names a source that cannot work, whatever the retries: a table or
    column that does not exist, a bucket that does not exist, a ``root_dir`` that is not a
    directory, a root, bucket or table outside the operator's allow-list (``CLICKTUNE_LOADER_ALLOWED_*``),
    credentials the source rejects, no database configured. Permanent: refuse at once with the reason.
    """

    permanent: bool = True


class ItemLoadError(LoaderError):
    """Raised by :meth:`ItemsLoader.load_one` when its single item failed; carries the failure."""

    def __init__(self, failure) -> None:  # LoadFailure (kept untyped to avoid an import cycle)
        super().__init__(f"item {failure.id!r}: {failure.reason}")
        self.failure = failure


class ItemProblem(LoaderError):
    """Raised inside a loader for a permanent per-item problem (bad meta, undecodable bytes)."""


_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


class Redactor:
    """Removes secrets from text meant for logs, task documents and failure reasons.

    Replaces every given secret value (and every given endpoint, by a label), user:password parts of
    URLs and ``password=`` pairs of libpq DSNs.
    """

    def __init__(self, secrets: Iterable[str | None] = (), endpoints: dict[str, str | None] | None = None) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)
        self._endpoints = {url: label for url, label in (endpoints or {}).items() if url}

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for url, label in self._endpoints.items():
            text = text.replace(url.rstrip("/"), label)
        text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
        return _DSN_PASSWORD.sub(r"\1***", text)

    def describe(self, exc: BaseException, limit: int = 300) -> str:
        """``"ExcType: message"`` with secrets removed, bounded in length."""
        message = " ".join(str(exc).split())
        text = self(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
        return text if len(text) <= limit else text[: limit - 1] + "…"
