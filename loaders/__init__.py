"""Item loaders: fetch the items a clickstream refers to from S3, GCS, PostgreSQL or local files.

``create_loader(config_dict).load([ItemMeta.from_search_result(object_id, meta), ...])`` returns a
:class:`LoadResult` with the items and a per-item failure list. See ``docs/loaders.md``.

Source classes (``AwsS3ImageLoader``, ``GCPTextLoader``, ``PgsqlTextLoader``, ...) are imported lazily so
that using one source does not import the client libraries of the others.
"""

from loaders.base import ItemsLoader, LoadStats
from loaders.cache import DiskItemsCache, ItemsCache, MemoryItemsCache, shared_cache
from loaders.config import (
    GcsTextLoaderConfig,
    LoaderConfig,
    LocalFileLoaderConfig,
    PgMultiTextLoaderConfig,
    PgTextLoaderConfig,
    S3ImageLoaderConfig,
    S3JsonLoaderConfig,
    S3TextLoaderConfig,
    loader_config_to_dict,
    parse_loader_config,
)
from loaders.downloaded_item import DownloadedItem, LoadFailure, LoadResult
from loaders.errors import ItemLoadError, LoaderError, SourceConfigError, SourceUnavailableError
from loaders.factory import create_loader, loader_class
from loaders.item_meta import ItemMeta
from loaders.retry import RetryPolicy
from loaders.settings import LoaderSettings
from loaders.text import item_to_text

_LAZY = {
    "LocalFileLoader": "loaders.local_file",
    "AwsS3Loader": "loaders.s3",
    "AwsS3ImageLoader": "loaders.s3",
    "AwsS3TextLoader": "loaders.s3",
    "AwsS3JsonLoader": "loaders.s3",
    "GCPTextLoader": "loaders.gcs",
    "PgsqlTextLoader": "loaders.pgsql",
    "PgsqlMultiTextColumnLoader": "loaders.pgsql",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'loaders' has no attribute {name!r}")


__all__ = [
    "AwsS3ImageLoader", "AwsS3JsonLoader", "AwsS3Loader", "AwsS3TextLoader", "DiskItemsCache", "DownloadedItem",
    "GCPTextLoader", "GcsTextLoaderConfig", "ItemLoadError", "ItemMeta", "ItemsCache", "ItemsLoader", "LoadFailure",
    "LoadResult", "LoadStats", "LoaderConfig", "LoaderError", "LoaderSettings", "LocalFileLoader",
    "LocalFileLoaderConfig", "MemoryItemsCache", "PgMultiTextLoaderConfig", "PgTextLoaderConfig",
    "PgsqlMultiTextColumnLoader", "PgsqlTextLoader", "RetryPolicy", "S3ImageLoaderConfig", "S3JsonLoaderConfig",
    "S3TextLoaderConfig", "SourceConfigError", "SourceUnavailableError", "create_loader", "item_to_text", "loader_class",
    "loader_config_to_dict", "parse_loader_config", "shared_cache",
]
