"""Container healthcheck of clicktune: exit 0 when healthy.

    python docker/healthcheck.py            # Redis and MongoDB answer (any clicktune container)
    python docker/healthcheck.py --worker   # and a worker process on this host is consuming
    python docker/healthcheck.py --api URL  # and the API answers its readiness probe

``--worker`` looks for a fresh ``<namespace>:worker-heartbeat:<hostname>:<pid>`` key, which a
worker process refreshes only while its consumers are alive and polling the broker (see
``worker/monitoring.py``): a worker that stopped consuming turns the container unhealthy even
though Redis still answers. Uses the same settings as the service (``CLICKTUNE_*``); prints
nothing secret (only which check failed and the exception type).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true", help="Require a consuming worker process on this host.")
    parser.add_argument("--api", metavar="URL", help="Require GET URL/v1/health/ready to answer 200.")
    args = parser.parse_args(argv)

    from worker.settings import Settings

    settings = Settings()
    try:
        import redis

        conn = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=3)
        conn.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"redis unreachable ({type(exc).__name__})")
        return 1
    try:
        import pymongo

        client = pymongo.MongoClient(settings.mongo_url.get_secret_value(), serverSelectionTimeoutMS=3000)
        client.admin.command("ping")
        client.close()
    except Exception as exc:  # noqa: BLE001
        print(f"mongo unreachable ({type(exc).__name__})")
        return 1
    if args.worker:
        from worker.monitoring import heartbeat_key_prefix

        if not any(True for _ in conn.scan_iter(heartbeat_key_prefix(settings.redis_namespace) + "*", count=100)):
            print("no worker process on this host is consuming (no fresh heartbeat)")
            return 1
    if args.api:
        import urllib.request

        try:
            with urllib.request.urlopen(args.api.rstrip("/") + "/v1/health/ready", timeout=5) as response:
                if response.status != 200:
                    print(f"api not ready ({response.status})")
                    return 1
        except Exception as exc:  # noqa: BLE001
            print(f"api not ready ({type(exc).__name__})")
            return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
