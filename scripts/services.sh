#!/usr/bin/env bash
# Make sure the local Redis and PostgreSQL answer; start them when they don't (Debian packages).
set -uo pipefail
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  echo "starting redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
if ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
  echo "starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
fi
redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || { echo "redis is not answering" >&2; exit 1; }
pg_isready -q -h 127.0.0.1 || { echo "postgresql is not answering" >&2; exit 1; }
