"""Container healthcheck of the clicktune worker: exit 0 when Redis and MongoDB answer.

Uses the same settings as the worker (``CLICKTUNE_REDIS_URL``, ``CLICKTUNE_MONGO_URL``); prints
nothing secret (only which dependency failed and the exception type).
"""

from __future__ import annotations

import sys


def main() -> int:
    from worker.settings import Settings

    settings = Settings()
    try:
        import redis

        redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=3).ping()
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
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
