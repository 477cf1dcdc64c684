"""Which loader a task uses: a pydantic discriminated union on ``source``.

A fine-tuning or reindex task stores this config in its Mongo document, so it holds NON-secret fields
only (bucket, templates, table, columns, tuning). Unknown fields are rejected (``extra="forbid"``), so a
credential cannot slip into a task document through the config. Secrets and endpoints come from
:class:`loaders.settings.LoaderSettings`.

Example: ``{"source": "s3_json", "bucket": "docs", "key_template": "corpus/{object_id}.json"}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from loaders.decoding import DataKind
from loaders.retry import RetryPolicy
from loaders.templates import template_fields


class _LoaderConfigBase(BaseModel):
    """Fields every source has: retries and timeouts.

    - ``max_attempts`` (5), ``backoff_initial_s`` (0.2), ``backoff_max_s`` (5.0): see :class:`RetryPolicy`.
    - ``connect_timeout_s`` (5.0) and ``read_timeout_s`` (30.0): for every request; for PostgreSQL the
      read timeout is the ``statement_timeout``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    max_attempts: int = Field(5, ge=1, le=50)
    backoff_initial_s: float = Field(0.2, ge=0, le=60)
    backoff_max_s: float = Field(5.0, ge=0, le=600)
    connect_timeout_s: float = Field(5.0, gt=0, le=600)
    read_timeout_s: float = Field(30.0, gt=0, le=3600)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts, backoff_initial_s=self.backoff_initial_s, backoff_max_s=self.backoff_max_s
        )


class _ObjectStoreConfigBase(_LoaderConfigBase):
    """Per-object sources: ``max_workers`` (16) requests in flight; ``cache`` (True) uses the shared items
    cache; ``cache_revalidate`` (True) asks the source whether a cached version is still current (cheap
    conditional/metadata request) instead of trusting it."""

    max_workers: int = Field(16, ge=1, le=256)
    cache: bool = True
    cache_revalidate: bool = True


def _check_template(value: str) -> str:
    template_fields(value)
    return value


class LocalFileLoaderConfig(_ObjectStoreConfigBase):
    """Files under ``root_dir``: meta ``path`` or ``path_template`` (default ``"{object_id}"``).

    ``kind``: ``auto`` (by extension: ``.json`` → dict, images → PIL, else text), ``text``, ``json``,
    ``image`` or ``bytes``. Cache off by default (reading the disk is as cheap as reading the cache).
    """

    source: Literal["local_file"] = "local_file"
    root_dir: str
    path_template: str = "{object_id}"
    kind: DataKind = "auto"
    encoding: str = "utf-8"
    image_mode: str | None = None
    max_workers: int = Field(4, ge=1, le=256)
    cache: bool = False

    _template = field_validator("path_template")(_check_template)


class _S3ConfigBase(_ObjectStoreConfigBase):
    """S3 objects: meta ``bucket``/``key``, else ``bucket`` and ``key_template`` from here.

    A meta ``bucket`` different from a configured ``bucket`` is refused per item (a clickstream must not
    steer the worker to other buckets its credentials can read).
    """

    bucket: str | None = None
    key_template: str = "{object_id}"

    _template = field_validator("key_template")(_check_template)


class S3ImageLoaderConfig(_S3ConfigBase):
    source: Literal["s3_image"] = "s3_image"
    image_mode: str | None = None


class S3TextLoaderConfig(_S3ConfigBase):
    source: Literal["s3_text"] = "s3_text"
    encoding: str = "utf-8"


class S3JsonLoaderConfig(_S3ConfigBase):
    source: Literal["s3_json"] = "s3_json"
    encoding: str = "utf-8"


class GcsTextLoaderConfig(_ObjectStoreConfigBase):
    """GCS blobs as text: meta ``bucket``/``blob``, else ``bucket`` and ``blob_template``. ``kind`` may be
    ``json`` for JSON documents (default ``text``)."""

    source: Literal["gcs_text"] = "gcs_text"
    bucket: str | None = None
    blob_template: str = "{object_id}"
    kind: Literal["text", "json"] = "text"
    encoding: str = "utf-8"

    _template = field_validator("blob_template")(_check_template)


class _PgConfigBase(_LoaderConfigBase):
    """A PostgreSQL table: rows by ``id_column`` (meta ``id``, else the object id), read ``chunk_size`` ids
    per query. ``schema`` is optional (search_path otherwise). Names may contain any characters: they are
    composed with ``psycopg2.sql.Identifier``."""

    table: str = Field(min_length=1)
    db_schema: str | None = Field(None, alias="schema")
    id_column: str = Field("id", min_length=1)
    chunk_size: int = Field(1000, ge=1, le=100_000)
    application_name: str = "clicktune-loader"


class PgTextLoaderConfig(_PgConfigBase):
    """One text column per row → ``str``."""

    source: Literal["pg_text"] = "pg_text"
    text_column: str = Field(min_length=1)


class PgMultiTextLoaderConfig(_PgConfigBase):
    """Several columns per row → ``"field: value"`` lines (NULL columns left out)."""

    source: Literal["pg_multi_text"] = "pg_multi_text"
    text_columns: list[str] = Field(min_length=1)
    line_separator: str = "\n"

    @field_validator("text_columns")
    @classmethod
    def _non_empty_names(cls, value: list[str]) -> list[str]:
        if any(not name for name in value):
            raise ValueError("column names must not be empty")
        return value


LoaderConfig = Annotated[
    Union[
        LocalFileLoaderConfig,
        S3ImageLoaderConfig,
        S3TextLoaderConfig,
        S3JsonLoaderConfig,
        GcsTextLoaderConfig,
        PgTextLoaderConfig,
        PgMultiTextLoaderConfig,
    ],
    Field(discriminator="source"),
]

_adapter: TypeAdapter = TypeAdapter(LoaderConfig)


def parse_loader_config(config: Any) -> LoaderConfig:
    """Validate a dict (e.g. from a task document) or pass a config model through."""
    if isinstance(config, _LoaderConfigBase):
        return config
    return _adapter.validate_python(config)


def loader_config_to_dict(config: LoaderConfig) -> dict[str, Any]:
    """The dict to store in a task document (round-trips through :func:`parse_loader_config`)."""
    return config.model_dump(mode="json", by_alias=True)
