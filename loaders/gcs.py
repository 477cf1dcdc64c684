"""Google Cloud Storage (and the emulator via ``CLICKTUNE_GCS_ENDPOINT_URL`` / ``STORAGE_EMULATOR_HOST``).

One ``storage.Client`` shared by the pool threads (as the library's own ``transfer_manager`` does), its
HTTP connection pool sized to ``max_workers``, library retries off (``retry=None``; :mod:`loaders.retry` decides), ``(connect, read)`` timeouts
on every call. The version of a blob is its CRC32C (sent by GCS and the emulator both on download and in
metadata); revalidation is a metadata read, then a download only if the CRC changed.
"""

from __future__ import annotations

import threading
from typing import Any

from loaders.cache import ItemsCache
from loaders.config import GcsTextLoaderConfig
from loaders.decoding import decode_json, decode_text
from loaders.errors import ErrorKind, Redactor, is_dropped_connection
from loaders.item_meta import ItemMeta
from loaders.object_store import ConcurrentObjectLoader, Fetched
from loaders.settings import LoaderSettings
from loaders.templates import render


class _MissingBucket(Exception):
    """The bucket itself does not exist (found after a 404 on an object)."""


def classify_gcs_error(exc: BaseException) -> ErrorKind | None:
    """Sort an exception of google-cloud-storage / requests / google-auth (see :mod:`loaders.errors`)."""
    import requests
    from google.api_core import exceptions as gex
    from google.auth import exceptions as aex

    try:
        from google.resumable_media.common import DataCorruption
    except ImportError:  # pragma: no cover - older layout
        DataCorruption = ()  # type: ignore[assignment]

    if isinstance(exc, _MissingBucket):
        return ErrorKind.SOURCE
    if isinstance(exc, gex.GoogleAPICallError):
        code = int(exc.code or 0) if exc.code is not None else 0
        if code == 401:
            return ErrorKind.SOURCE
        if code in (408, 429) or code >= 500:
            return ErrorKind.TRANSIENT
        return ErrorKind.ITEM  # 404, 403 on one object, 412 ...
    if isinstance(exc, (aex.RefreshError, aex.DefaultCredentialsError)):
        return ErrorKind.SOURCE
    if isinstance(exc, aex.TransportError):
        return ErrorKind.UNREACHABLE
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(exc, requests.exceptions.ReadTimeout):
        # refused / reset while connecting / DNS / connect timeout ("Connection aborted" mid-response is
        # also a ConnectionError: treated as unreachable, which is retried just the same)
        return ErrorKind.UNREACHABLE
    if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError, DataCorruption)):
        return ErrorKind.TRANSIENT
    if is_dropped_connection(exc):
        return ErrorKind.TRANSIENT
    return None


class GCPTextLoader(ConcurrentObjectLoader):
    """GCS blobs as text (or JSON with ``kind="json"``): meta ``bucket``/``blob`` or config defaults."""

    source = "gcs_text"

    def __init__(self, config: GcsTextLoaderConfig, settings: LoaderSettings | None = None, cache: ItemsCache | None = None) -> None:
        settings = settings or LoaderSettings()
        endpoint = settings.gcs_endpoint_url
        super().__init__(
            max_workers=config.max_workers,
            retry=config.retry_policy(),
            cache=cache if config.cache else None,
            cache_revalidate=config.cache_revalidate,
            cache_source=f"gcs|{endpoint or 'google'}",
            redactor=Redactor(settings.secret_values(), {endpoint: "<gcs-endpoint>"} if endpoint else None),
        )
        self.config = config
        self.settings = settings
        if config.bucket:
            settings.check_bucket(config.bucket, config.source)
        self._client = None
        self._client_lock = threading.Lock()
        self._bucket_exists: dict[str, bool] = {}
        self._bucket_lock = threading.Lock()

    @property
    def client(self):
        """The ``google.cloud.storage.Client`` (created on first use)."""
        with self._client_lock:
            if self._client is None:
                self._client = _make_client(self.settings, self.max_workers)
            return self._client

    @property
    def _timeout(self) -> tuple[float, float]:
        return (self.config.connect_timeout_s, self.config.read_timeout_s)

    def _locate(self, meta: ItemMeta) -> str:
        bucket = self._bucket_of(meta, self.config.bucket)
        blob = meta.get("blob") or render(self.config.blob_template, meta.object_id, meta.location)
        return f"{bucket}/{blob}"

    def _fetch(self, meta: ItemMeta, location: str, if_version: str | None) -> Fetched:
        from google.api_core.exceptions import NotFound

        bucket_name, blob_name = location.split("/", 1)
        bucket = self.client.bucket(bucket_name)
        try:
            if if_version:
                self.stats.add(requests=1)
                current = bucket.blob(blob_name)
                current.reload(timeout=self._timeout, retry=None)
                if _version(current) == if_version:
                    return Fetched(None, if_version)
            # a fresh Blob: its download URL is built from the client's endpoint, not a reloaded mediaLink
            blob = bucket.blob(blob_name)
            self.stats.add(requests=1)
            data = blob.download_as_bytes(timeout=self._timeout, retry=None)
        except NotFound:
            if not self._bucket_is_there(bucket_name):
                raise _MissingBucket(f"bucket {bucket_name!r} does not exist") from None
            raise
        return Fetched(data, _version(blob))

    def _bucket_is_there(self, bucket_name: str) -> bool:
        """Checked once per bucket per loader, only after a 404 (a typo in the bucket → raise, not N misses)."""
        with self._bucket_lock:
            known = self._bucket_exists.get(bucket_name)
        if known is None:
            self.stats.add(requests=1)
            known = self.client.bucket(bucket_name).exists(timeout=self._timeout, retry=None)
            with self._bucket_lock:
                self._bucket_exists[bucket_name] = known
        return known

    def _classify(self, exc: BaseException) -> ErrorKind | None:
        return classify_gcs_error(exc)

    def close(self) -> None:
        super().close()
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _decode(self, data: bytes, meta: ItemMeta, location: str) -> Any:
        if self.config.kind == "json":
            return decode_json(data, self.config.encoding)
        return decode_text(data, self.config.encoding)


def _version(blob) -> str | None:
    if blob.crc32c:
        return f"crc32c:{blob.crc32c}"
    return f"generation:{blob.generation}" if blob.generation else None


def _make_client(settings: LoaderSettings, pool_size: int):
    from google.cloud import storage
    from requests.adapters import HTTPAdapter

    endpoint = settings.gcs_endpoint_url
    if settings.gcp_credentials_file:
        from google.oauth2 import service_account

        credentials = service_account.Credentials.from_service_account_file(str(settings.gcp_credentials_file))
    elif endpoint:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    else:
        credentials = None  # application default credentials
    options = {"api_endpoint": endpoint} if endpoint else None
    project = settings.gcp_project or ("clicktune-local" if endpoint else None)
    client = storage.Client(project=project, credentials=credentials, client_options=options)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, pool_size), max_retries=0)
    client._http.mount("https://", adapter)  # the documented way to size a requests.Session's pool
    client._http.mount("http://", adapter)
    return client
