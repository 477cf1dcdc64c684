"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Every operation gets a bounded number of generated requests (valid and invalid bodies, paths and
queries) against the in-process app backed by the real nx-27017 server and Redis. No response may
be a 5xx, use a status the document does not declare, or break its declared schema.
"""

from __future__ import annotations

import time
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from worker.api import create_app
from worker.api.auth import hash_key
from worker.settings import Settings

ADMIN_KEY = f"fuzz-admin-{uuid.uuid4().hex}"
MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_app(mongo_server, redis_url, tmp_path_factory):
    import pymongo
    import redis

    db_name = f"clicktune_fuzz_{uuid.uuid4().hex[:8]}"
    namespace = f"clicktune-fuzz-{uuid.uuid4().hex[:8]}"
    app_settings = Settings(mongo_url=mongo_server.url, mongo_db=db_name, redis_url=redis_url, redis_namespace=namespace,
                            chroma_path=str(tmp_path_factory.mktemp("fuzz-chroma")), api_max_body_bytes=64 * 1024,
                            api_keys=[{"name": "fuzz", "sha256": hash_key(ADMIN_KEY), "scopes": ["admin"]}])
    yield create_app(app_settings)
    pymongo.MongoClient(mongo_server.url).drop_database(db_name)
    conn = redis.Redis.from_url(redis_url)
    keys = list(conn.scan_iter(f"{namespace}*"))
    if keys:
        conn.delete(*keys)


def test_no_server_error_and_responses_match_the_schema(fuzz_app):
    """Each operation: up to 20 generated requests (hypothesis, derandomized so a failure replays)."""
    api_schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            case.call_and_validate(headers={"X-API-Key": ADMIN_KEY}, checks=CHECKS)

        started = time.perf_counter()
        fuzz()
        print(f"{operation.label}: {time.perf_counter() - started:.1f} s")
