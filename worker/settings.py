"""Service settings, read from the environment with the ``CLICKTUNE_`` prefix.

Every process of the service (worker, CLI, client, benchmarks) builds its view of the world from
:class:`Settings`: ``CLICKTUNE_REDIS_URL``, ``CLICKTUNE_MONGO_URL``, ``CLICKTUNE_MONGO_DB`` …
Connection URLs may carry credentials, so they are :class:`pydantic.SecretStr`: they print as
``**********`` and must be unwrapped explicitly (``settings.mongo_url.get_secret_value()``) at the
one place that opens the connection. Never log them, store them in task documents or MLflow params.

Other areas add their own fields here (with defaults) — keep one field per concern, documented.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings of a clicktune process. All durations are in seconds unless the name says ``_ms``."""

    model_config = SettingsConfigDict(env_prefix="CLICKTUNE_", extra="ignore", env_file=None)

    # --- connections -------------------------------------------------------------------------
    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"),
                                 description="Redis used by Dramatiq (may hold a password).")
    redis_namespace: str = Field("clicktune", description="Prefix of every Dramatiq key in Redis; "
                                 "separate deployments (or test runs) sharing a Redis use different ones.")
    mongo_url: SecretStr = Field(SecretStr("mongodb://127.0.0.1:27017/?directConnection=true"),
                                 description="MongoDB holding task documents and clickstream.")
    mongo_db: str = "clicktune"
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    broker: Literal["redis", "stub"] = Field("redis", description="'stub' = in-process Dramatiq StubBroker "
                                             "(demos/tests without Redis).")
    log_format: Literal["text", "json"] = Field("text", description="Worker log lines: text, or one JSON "
                                                "object per line (see worker/logs.py).")

    # --- queues (one per task kind) ----------------------------------------------------------
    fine_tuning_queue: str = "fine_tuning"
    reindex_queue: str = "reindex"
    probe_queue: str = "probe"

    # --- time limits, retries ----------------------------------------------------------------
    task_time_limit_s: float = Field(6 * 3600, gt=0, description="Dramatiq TimeLimit of fine-tuning/reindex.")
    probe_time_limit_s: float = Field(600, gt=0, description="TimeLimit of the diagnostic probe kind.")
    max_retries: int = Field(3, ge=0, description="Retries after an infrastructure error "
                             "(a task runs at most max_retries + 1 times).")
    min_backoff_ms: int = Field(5_000, gt=0)
    max_backoff_ms: int = Field(300_000, gt=0)
    max_message_age_ms: int = Field(7 * 24 * 3600 * 1000, gt=0,
                                    description="AgeLimit: a message older than this is dropped and its task failed.")

    # --- leases -------------------------------------------------------------------------------
    lease_seconds: float = Field(60.0, gt=0, description="A claim holds the task this long unless renewed.")
    heartbeat_seconds: float = Field(10.0, gt=0, description="Lease renewal / cancel polling interval.")
    reaper_interval_s: float = Field(15.0, gt=0, description="How often a worker takes back expired leases.")
    resend_grace_s: float = Field(30.0, ge=0, description="A pending task whose message is this long past its "
                                  "due time (at least 2 x lease_seconds) is re-sent by the lease reaper; an enqueue "
                                  "retry with the same idempotency key re-sends an unsent task after this long.")

    # --- training resources of this worker's machine (not what is learned) ---------------------
    train_mini_batch_size: int | None = Field(None, ge=1, description="Most texts per tower forward with "
                                              "autograd in this worker's fine-tuning (gradient caching: the same "
                                              "gradients, memory bounded by it); unset = the engine's default (32). "
                                              "A task's options.settings.mini_batch_size wins.")

    # --- vector store and reindex (worker/vector_store, worker/jobs/reindex_job.py) -------------
    chroma_path: str = Field(".clicktune/chroma", description="Embedded ChromaDB directory "
                             "(used when chroma_host is not set).")
    chroma_host: str | None = Field(None, description="Chroma server host; set → HTTP client instead of embedded.")
    chroma_port: int = Field(8000, gt=0)
    chroma_ssl: bool = False
    chroma_auth_token: SecretStr | None = Field(None, description="Bearer token for a Chroma server, if any.")
    blue_pointer_name: str = Field("default", description="Deployment whose blue collection a reindex "
                                   "without an explicit source re-embeds.")
    reindex_page_size: int = Field(256, ge=1, description="Items read, loaded and embedded per page.")
    reindex_conflict_delay_ms: int = Field(30_000, ge=0, description="wait_on_conflict: re-send delay "
                                           "while a model is locked.")
    model_lock_lease_seconds: float = Field(60.0, gt=0, description="Lease of a model lock (renewed every third).")

    # --- HTTP API (worker/api), scheduler (worker/scheduler.py), metrics (worker/metrics.py) ---
    api_host: str = Field("127.0.0.1", description="Address `clicktune api` binds to.")
    api_port: int = Field(8080, gt=0, lt=65536)
    api_keys: list[dict[str, Any]] = Field(default_factory=list, description="API keys as JSON: "
                                           '[{"name": ..., "sha256": <hex of the key>, "scopes": [...]}] '
                                           "(hashes only; keys can also live in the api_keys collection).")
    api_max_body_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Larger request bodies get 413.")
    api_metrics_public: bool = Field(True, description="Serve /metrics without a key (else scope admin).")
    api_torch_threads: int = Field(1, ge=1, description="Torch intra-op threads of the API process: one query "
                                   "at a time gains nothing from more, and idle-spinning OpenMP threads add latency.")
    schedule_model_line: str | None = Field(None, description="Model line the scheduler retrains "
                                            "(unset = the scheduler does nothing).")
    schedule_embedding_model_id: str | None = Field(None, description="Start model of scheduled tasks "
                                                    "(e.g. models:/<line>@blue).")
    schedule_min_sessions: int = Field(1000, ge=1, description="Fire when the open batch holds this many sessions.")
    schedule_interval_s: float | None = Field(None, gt=0, description="Or fire when this long has passed "
                                              "since the last firing (and the open batch is not empty).")
    schedule_options: dict[str, Any] = Field(default_factory=dict, description="FineTuningOptions of scheduled tasks.")
    schedule_deploy_as_blue: bool = True
    schedule_tick_s: float = Field(60.0, gt=0, description="How often `clicktune schedule` checks the condition.")
    worker_metrics_port: int | None = Field(None, gt=0, lt=65536, description="Set → workers export "
                                            "Dramatiq's Prometheus metrics on this port.")
    worker_metrics_dir: str | None = Field(None, description="Prometheus multiprocess directory of the workers.")
    worker_heartbeat_s: float = Field(10.0, gt=0, description="How often a worker refreshes its Redis heartbeat.")

    def time_limit_s(self, kind: str) -> float:
        """The Dramatiq time limit of a task kind."""
        return self.probe_time_limit_s if kind == "probe" else self.task_time_limit_s

    def queue_name(self, kind: str) -> str:
        """The Dramatiq queue of a task kind (``<kind>_queue`` when defined, else the kind's name)."""
        return getattr(self, f"{kind}_queue", kind)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from the environment (cached; tests build ``Settings(...)`` directly)."""
    return Settings()
