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
=============================  ==============================================================
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
