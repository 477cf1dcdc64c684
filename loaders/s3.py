"""Amazon S3 (and S3-compatible stores via ``CLICKTUNE_S3_ENDPOINT_URL``).

One boto3 client (thread-safe) shared by the pool, ``max_pool_connections`` = ``max_workers``, botocore's
own retries off (our :mod:`loaders.retry` policy decides), connect/read timeouts on every call. Versions
are ETags; revalidation is a ``GetObject`` with ``If-None-Match`` (a 304 carries no body).
"""

from __future__ import annotations

from typing import Any

from loaders.cache import ItemsCache
from loaders.config import S3ImageLoaderConfig, S3JsonLoaderConfig, S3TextLoaderConfig, _S3ConfigBase
from loaders.decoding import decode_image, decode_json, decode_text
from loaders.errors import ErrorKind, Redactor, is_dropped_connection
from loaders.item_meta import ItemMeta
from loaders.object_store import ConcurrentObjectLoader, Fetched
from loaders.settings import LoaderSettings
from loaders.templates import render

# Error codes that mean "the source is unusable", not "this object".
_SOURCE_CODES = frozenset({
    "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AccountProblem", "InvalidBucketName", "AllAccessDisabled", "PermanentRedirect",
    "AuthorizationHeaderMalformed", "MissingSecurityHeader",
})
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException",
    "BandwidthLimitExceeded", "PriorRequestNotComplete", "EC2ThrottledException",
})


def classify_boto_error(exc: BaseException) -> ErrorKind | None:
    """Sort a botocore exception (see :mod:`loaders.errors`); ``None`` for anything else."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _SOURCE_CODES or status == 401:
            return ErrorKind.SOURCE
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return ErrorKind.TRANSIENT
        return ErrorKind.ITEM  # NoSuchKey, 404, AccessDenied on one object (S3 answers 403 for missing
        # keys without ListBucket), InvalidObjectState (archived), ...
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError, bex.NoRegionError)):
        return ErrorKind.SOURCE
    if isinstance(exc, bex.ConnectionError):  # refused, DNS, connect timeout, proxy
        return ErrorKind.UNREACHABLE
    if isinstance(exc, (bex.HTTPClientError, bex.IncompleteReadError)):  # read timeout, dropped connection
        return ErrorKind.TRANSIENT
    if is_dropped_connection(exc):  # a cut that reached us unwrapped by botocore
        return ErrorKind.TRANSIENT
    return None


class AwsS3Loader(ConcurrentObjectLoader):
    """Base of the S3 loaders: resolves ``bucket``/``key`` and fetches bytes; subclasses decode.

    ``client`` may be passed (e.g. with event hooks); otherwise it is built from ``settings``.
    """

    source = "s3"

    def __init__(
        self, config: _S3ConfigBase, settings: LoaderSettings | None = None, cache: ItemsCache | None = None, client: Any = None
    ) -> None:
        settings = settings or LoaderSettings()
        endpoint = settings.s3_endpoint_url
        super().__init__(
            max_workers=config.max_workers,
            retry=config.retry_policy(),
            cache=cache if config.cache else None,
            cache_revalidate=config.cache_revalidate,
            cache_source=f"s3|{endpoint or 'aws'}",
            redactor=Redactor(settings.secret_values(), {endpoint: "<s3-endpoint>"} if endpoint else None),
        )
        self.source = config.source
        self.config = config
        self.settings = settings
        if config.bucket:
            settings.check_bucket(config.bucket, config.source)
        self.client = client if client is not None else _make_client(config, settings)

    def _locate(self, meta: ItemMeta) -> str:
        bucket = self._bucket_of(meta, self.config.bucket)
        key = meta.get("key") or render(self.config.key_template, meta.object_id, meta.location)
        return f"{bucket}/{key}"

    def _fetch(self, meta: ItemMeta, location: str, if_version: str | None) -> Fetched:
        from botocore.exceptions import ClientError

        bucket, key = location.split("/", 1)
        kwargs = {"Bucket": bucket, "Key": key}
        if if_version:
            kwargs["IfNoneMatch"] = if_version
        self.stats.add(requests=1)
        try:
            response = self.client.get_object(**kwargs)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if if_version and (status == 304 or exc.response.get("Error", {}).get("Code") in ("304", "NotModified")):
                return Fetched(None, if_version)
            raise
        body = response["Body"]
        try:
            # StreamingBody.read(), not ``with body as raw``: its __enter__ hands out the bare urllib3
            # stream, whose dropped-connection errors botocore would no longer wrap.
            data = body.read()
        finally:
            body.close()
        return Fetched(data, response.get("ETag"))

    def _classify(self, exc: BaseException) -> ErrorKind | None:
        return classify_boto_error(exc)

    def _decode(self, data: bytes, meta: ItemMeta, location: str) -> Any:
        return data


class AwsS3ImageLoader(AwsS3Loader):
    """S3 objects decoded as ``PIL.Image`` (optionally converted to ``config.image_mode``, e.g. ``"RGB"``)."""

    def __init__(self, config: S3ImageLoaderConfig, settings=None, cache=None, client=None) -> None:
        super().__init__(config, settings, cache, client)

    def _decode(self, data: bytes, meta: ItemMeta, location: str) -> Any:
        return decode_image(data, self.config.image_mode)


class AwsS3TextLoader(AwsS3Loader):
    """S3 objects decoded as text (``config.encoding``)."""

    def __init__(self, config: S3TextLoaderConfig, settings=None, cache=None, client=None) -> None:
        super().__init__(config, settings, cache, client)

    def _decode(self, data: bytes, meta: ItemMeta, location: str) -> Any:
        return decode_text(data, self.config.encoding)


class AwsS3JsonLoader(AwsS3Loader):
    """S3 objects decoded as JSON (``dict`` for documents such as ``{"title", "text"}``)."""

    def __init__(self, config: S3JsonLoaderConfig, settings=None, cache=None, client=None) -> None:
        super().__init__(config, settings, cache, client)

    def _decode(self, data: bytes, meta: ItemMeta, location: str) -> Any:
        return decode_json(data, self.config.encoding)


def _make_client(config: _S3ConfigBase, settings: LoaderSettings):
    import boto3
    from botocore.config import Config

    def secret(value):
        return value.get_secret_value() if value is not None else None

    session = boto3.session.Session(
        aws_access_key_id=secret(settings.aws_access_key_id),
        aws_secret_access_key=secret(settings.aws_secret_access_key),
        aws_session_token=secret(settings.aws_session_token),
        region_name=settings.aws_region,
    )
    boto_config = Config(
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.read_timeout_s,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=config.max_workers,
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
    )
    return session.client("s3", endpoint_url=settings.s3_endpoint_url, config=boto_config)
