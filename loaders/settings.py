"""Secrets and endpoints of the loaders, from the environment (prefix ``CLICKTUNE_``).

Never stored in task documents, never logged (secrets are ``SecretStr``; failure reasons are redacted).

=============================  ==============================================================
``CLICKTUNE_S3_ENDPOINT_URL``  S3-compatible endpoint (MinIO, moto); unset → AWS
``CLICKTUNE_AWS_ACCESS_KEY_ID`` / ``..._AWS_SECRET_ACCESS_KEY`` / ``..._AWS_SESSION_TOKEN``
                               unset → boto3's default chain (``AWS_*`` env, profile, instance role)
``CLICKTUNE_AWS_REGION``       default ``us-east-1``
``CLICKTUNE_GCS_ENDPOINT_URL`` GCS endpoint; falls back to ``STORAGE_EMULATOR_HOST`` (emulator)
``CLICKTUNE_GCP_PROJECT``      project for the GCS client
``CLICKTUNE_GCP_CREDENTIALS_FILE``  service-account JSON; unset → ADC (anonymous with an emulator)
``CLICKTUNE_PG_DSN``           libpq DSN or URL of the items database
``CLICKTUNE_LOADER_CACHE_DIR`` on-disk items cache shared by processes; unset → in-memory
``CLICKTUNE_LOADER_CACHE_MAX_BYTES``  bound of the items cache (0 disables it), default 256 MiB
``CLICKTUNE_LOADER_ALLOWED_ROOTS``    directories a ``local_file`` task may read (itself or below)
``CLICKTUNE_LOADER_ALLOWED_BUCKETS``  S3 / GCS buckets a task may read
``CLICKTUNE_LOADER_ALLOWED_TABLES``   PostgreSQL tables a task may read: ``table`` (no schema given),
                               ``schema.table``, ``schema.*`` (any table of the schema)
=============================  ==============================================================

The allow-lists are the operator's boundary: whoever enqueues a task names a root, bucket or table,
and the loader refuses (:class:`~loaders.errors.SourceConfigError`, permanent) anything the operator
did not list. A list is comma-separated or a JSON array. **Empty (the default) allows nothing** for
that kind of source; ``*`` allows every value (an explicit opt-out, e.g. for a sandbox).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from loaders.errors import SourceConfigError

ANY = "*"


class LoaderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLICKTUNE_", extra="ignore", populate_by_name=True)

    s3_endpoint_url: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_region: str = "us-east-1"

    gcs_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("CLICKTUNE_GCS_ENDPOINT_URL", "STORAGE_EMULATOR_HOST")
    )
    gcp_project: str | None = None
    gcp_credentials_file: Path | None = None

    pg_dsn: SecretStr | None = None

    loader_cache_dir: Path | None = None
    loader_cache_max_bytes: int = Field(256 * 2**20, ge=0)

    loader_allowed_roots: Annotated[list[str], NoDecode] = Field(default_factory=list)
    loader_allowed_buckets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    loader_allowed_tables: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("loader_allowed_roots", "loader_allowed_buckets", "loader_allowed_tables", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """``"a,b"`` or ``'["a", "b"]'`` from the environment; a list as it is."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    # -- the operator's boundaries -------------------------------------------------------------------
    def check_root(self, root_dir: str | Path) -> Path:
        """The resolved ``root_dir`` if it is an allowed root or lies below one; else
        :class:`SourceConfigError` naming ``CLICKTUNE_LOADER_ALLOWED_ROOTS``."""
        try:
            root = Path(root_dir).expanduser().resolve()
        except (ValueError, OSError, RuntimeError) as exc:
            raise SourceConfigError(f"local_file root_dir is not a usable path ({type(exc).__name__})") from None
        if ANY in self.loader_allowed_roots:
            return root
        for allowed in self.loader_allowed_roots:
            try:
                base = Path(allowed).expanduser().resolve()
            except (ValueError, OSError, RuntimeError):
                continue
            if root.is_relative_to(base):
                return root
        raise SourceConfigError(
            f"local_file root_dir {_quoted(root_dir)} is outside the allowed roots "
            f"(the operator lists them in CLICKTUNE_LOADER_ALLOWED_ROOTS{'; it is empty' if not self.loader_allowed_roots else ''})"
        )

    def bucket_allowed(self, bucket: str) -> bool:
        return ANY in self.loader_allowed_buckets or bucket in self.loader_allowed_buckets

    def check_bucket(self, bucket: str, source: str) -> None:
        """:class:`SourceConfigError` unless ``bucket`` is in ``CLICKTUNE_LOADER_ALLOWED_BUCKETS``."""
        if not self.bucket_allowed(bucket):
            raise SourceConfigError(f"{source}: {bucket_refusal(bucket, self.loader_allowed_buckets)}")

    def check_table(self, schema: str | None, table: str, source: str) -> None:
        """:class:`SourceConfigError` unless ``schema.table`` (or ``table`` when no schema is given) is
        in ``CLICKTUNE_LOADER_ALLOWED_TABLES`` (``schema.*`` allows a whole schema, ``*`` everything)."""
        for entry in self.loader_allowed_tables:
            if entry == ANY:
                return
            allowed_schema, dot, allowed_table = entry.partition(".")
            if not dot and schema is None and entry == table:
                return
            if dot and schema == allowed_schema and allowed_table in (ANY, table):
                return
        name = f"{schema}.{table}" if schema is not None else table
        raise SourceConfigError(
            f"{source}: table {_quoted(name)} is not in the allowed tables "
            f"(the operator lists them in CLICKTUNE_LOADER_ALLOWED_TABLES{'; it is empty' if not self.loader_allowed_tables else ''})"
        )

    def secret_values(self) -> list[str]:
        """Every secret value (for redaction), including the password inside the DSN."""
        values = [
            s.get_secret_value()
            for s in (self.aws_access_key_id, self.aws_secret_access_key, self.aws_session_token, self.pg_dsn)
            if s is not None
        ]
        if self.pg_dsn is not None:
            values.extend(_dsn_passwords(self.pg_dsn.get_secret_value()))
        return values


def _dsn_passwords(dsn: str) -> list[str]:
    """The password of a libpq DSN or URL, if any (psycopg2's own parser)."""
    try:
        from psycopg2.extensions import parse_dsn

        password = parse_dsn(dsn).get("password")
    except Exception:
        return []
    return [password] if password else []


def _quoted(value: Any, limit: int = 120) -> str:
    text = ascii(str(value))
    return text if len(text) <= limit else text[: limit - 2] + "…'"


def bucket_refusal(bucket: str, allowed: list[str]) -> str:
    """Why ``bucket`` is refused (shared by the loader-level and the per-item check)."""
    return (f"bucket {_quoted(bucket)} is not in the allowed buckets "
            f"(the operator lists them in CLICKTUNE_LOADER_ALLOWED_BUCKETS{'; it is empty' if not allowed else ''})")
