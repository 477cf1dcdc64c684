"""API keys: hashed at rest, each with scopes; a FastAPI dependency per scope.

A client sends its key in the ``X-API-Key`` header. The service never stores or logs a key, only
its SHA-256 (hex): keys are long random tokens (``clicktune api-key new`` makes 256-bit ones), so
a fast hash is enough — there is nothing to brute-force. Known keys come from

- settings: ``CLICKTUNE_API_KEYS='[{"name": "search-frontend", "sha256": "<hex>", "scopes": ["search"]}]'``;
- the ``api_keys`` Mongo collection: ``{_id: <sha256 hex>, name, scopes}`` (``clicktune api-key new
  --store``), looked up on a miss and cached briefly.

Scopes: ``ingest`` (clickstream), ``tasks`` (tasks, blue pointer, schedule), ``search``, and
``admin`` (everything). A missing or unknown key is 401, a key without the scope 403; both say why
and name the key only by its ``name``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from enum import Enum
from typing import Any, Callable, Iterable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field, ValidationError
from pymongo.database import Database

API_KEY_HEADER = "X-API-Key"
KEYS_COLLECTION = "api_keys"
CACHE_SECONDS = 30.0


class Scope(str, Enum):
    ingest = "ingest"
    tasks = "tasks"
    search = "search"
    admin = "admin"


class ApiKeyRecord(BaseModel):
    """A known key: a name for people and logs, the key's SHA-256 (hex) and its scopes."""

    name: str = Field(min_length=1, max_length=200)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: set[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.admin in self.scopes or scope in self.scopes


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return "ct_" + secrets.token_urlsafe(32)


class KeyRing:
    """Resolves a presented key to its :class:`ApiKeyRecord` (settings first, then Mongo)."""

    def __init__(self, configured: Iterable[dict[str, Any] | ApiKeyRecord],
                 db: Callable[[], Database] | None = None) -> None:
        self._configured: list[ApiKeyRecord] = []
        for entry in configured:
            try:
                self._configured.append(entry if isinstance(entry, ApiKeyRecord) else ApiKeyRecord.model_validate(entry))
            except ValidationError as exc:
                name = entry.get("name", "?") if isinstance(entry, dict) else "?"
                raise ValueError(f"CLICKTUNE_API_KEYS entry {name!r} is invalid: {exc.errors()[0]['msg']}") from None
        self._db = db
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> ApiKeyRecord | None:
        digest = hash_key(key)
        for record in self._configured:
            if hmac.compare_digest(record.sha256, digest):
                return record
        if self._db is None:
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        doc = self._db()[KEYS_COLLECTION].find_one({"_id": digest})
        record = None
        if doc is not None and not doc.get("disabled"):
            record = ApiKeyRecord(name=doc.get("name") or "unnamed", sha256=digest, scopes=set(doc.get("scopes") or []))
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + CACHE_SECONDS, record)
        return record


def store_key(db: Database, name: str, scopes: Iterable[Scope | str], key: str) -> ApiKeyRecord:
    """Store ``key``'s hash with ``name`` and ``scopes`` in the ``api_keys`` collection (never the key)."""
    record = ApiKeyRecord(name=name, sha256=hash_key(key), scopes={Scope(s) for s in scopes})
    db[KEYS_COLLECTION].replace_one({"_id": record.sha256},
                                    {"_id": record.sha256, "name": record.name,
                                     "scopes": sorted(s.value for s in record.scopes)}, upsert=True)
    return record


_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                       description="An API key; its scopes decide which endpoints it may call.")


def require(scope: Scope) -> Any:
    """A dependency that lets the request through only with a key holding ``scope`` (or admin)."""

    def check(request: Request, key: str | None = Depends(_header)) -> ApiKeyRecord:
        if not key:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                                f"missing API key: send it in the {API_KEY_HEADER} header",
                                headers={"WWW-Authenticate": API_KEY_HEADER})
        record = request.app.state.services.keys.lookup(key)
        if record is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key: it matches no known key",
                                headers={"WWW-Authenticate": API_KEY_HEADER})
        if not record.allows(scope):
            held = ", ".join(sorted(s.value for s in record.scopes)) or "none"
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"API key {record.name!r} lacks scope {scope.value!r} (it has: {held})")
        request.state.api_key_name = record.name
        return record

    return Depends(check)
