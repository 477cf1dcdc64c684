"""A loader from its config: ``create_loader({"source": "s3_json", "bucket": "docs"})``."""

from __future__ import annotations

from typing import Any

from loaders.base import ItemsLoader
from loaders.cache import ItemsCache, shared_cache
from loaders.config import LoaderConfig, parse_loader_config
from loaders.settings import LoaderSettings

_DEFAULT = object()


def loader_class(source: str) -> type[ItemsLoader]:
    """The loader class for a config's ``source`` value (imports only that source's client library)."""
    if source == "local_file":
        from loaders.local_file import LocalFileLoader as cls
    elif source == "s3_image":
        from loaders.s3 import AwsS3ImageLoader as cls
    elif source == "s3_text":
        from loaders.s3 import AwsS3TextLoader as cls
    elif source == "s3_json":
        from loaders.s3 import AwsS3JsonLoader as cls
    elif source == "gcs_text":
        from loaders.gcs import GCPTextLoader as cls
    elif source == "pg_text":
        from loaders.pgsql import PgsqlTextLoader as cls
    elif source == "pg_multi_text":
        from loaders.pgsql import PgsqlMultiTextColumnLoader as cls
    else:
        raise ValueError(f"unknown loader source {source!r}")
    return cls


def create_loader(
    config: LoaderConfig | dict[str, Any],
    settings: LoaderSettings | None = None,
    cache: ItemsCache | None | object = _DEFAULT,
) -> ItemsLoader:
    """Build the loader a config names.

    ``config``: a :data:`LoaderConfig` or its dict (validated; unknown fields rejected).
    ``settings``: secrets and endpoints; default :class:`LoaderSettings` from the environment.
    ``cache``: default the process-wide :func:`shared_cache` for ``settings`` (so loaders created for
    different tasks share it); ``None`` disables caching; or pass a specific :class:`ItemsCache`.
    """
    parsed = parse_loader_config(config)
    settings = settings or LoaderSettings()
    if cache is _DEFAULT:
        cache = shared_cache(settings.loader_cache_dir, settings.loader_cache_max_bytes)
    return loader_class(parsed.source)(parsed, settings, cache)
