"""Worker-side monitoring middleware: a consumption heartbeat in Redis, and Dramatiq's Prometheus metrics.

**Heartbeat** (:class:`WorkerHeartbeat`): every ``worker_heartbeat_s`` each worker process writes
``<namespace>:worker-heartbeat:<hostname>:<pid>`` (JSON, expiring after three periods) — only while
it is really consuming: its consumer and worker threads are alive *and* its Redis consumers polled
the broker recently (Dramatiq records every fetch of a worker process in ``<namespace>:__heartbeats__``
under the process's broker id; we read that score). A hung or disconnected worker stops refreshing
the key, so ``docker/healthcheck.py --worker`` turns the container unhealthy, where a plain
"Redis answers" check would stay green.

**Prometheus** (:func:`worker_prometheus_middleware`): with ``CLICKTUNE_WORKER_METRICS_PORT`` set,
``dramatiq.middleware.prometheus.Prometheus`` counts messages, errors, retries and durations per
actor across the worker processes and serves them on that port.

Neither imports ``prometheus_client`` at import time: its multiprocess mode is chosen when it is
first imported, which must happen after the middleware set the directory.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import dramatiq

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "worker-heartbeat"


def heartbeat_key_prefix(namespace: str, hostname: str | None = None) -> str:
    """Keys of ``hostname``'s worker processes start with this (``hostname`` default: this host)."""
    return f"{namespace}:{HEARTBEAT_PREFIX}:{hostname or socket.gethostname()}:"


class WorkerHeartbeat(dramatiq.Middleware):
    """Refresh a Redis key while this worker process consumes (see the module docstring)."""

    def __init__(self, namespace: str, interval_s: float) -> None:
        self.namespace = namespace
        self.interval_s = interval_s
        self.processed = 0
        self.last_message_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return heartbeat_key_prefix(self.namespace) + str(os.getpid())

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        client = getattr(broker, "client", None)
        if client is None:  # stub broker: nothing to report to
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, args=(broker, worker, client), name="clicktune-heartbeat",
                                        daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)  # so no last beat lands after the delete
        client = getattr(broker, "client", None)
        if client is not None:
            try:
                client.delete(self.key)
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:
        self.processed += 1
        self.last_message_at = time.time()

    after_skip_message = after_process_message

    def consuming(self, broker: Any, worker: Any, client: Any) -> tuple[bool, str]:
        """Whether this process consumes now, and why not."""
        threads = list(getattr(worker, "consumers", {}).values()) + list(getattr(worker, "workers", []))
        dead = [getattr(t, "name", "?") for t in threads if not t.is_alive()]
        if dead:
            return False, f"threads not alive: {dead[:3]}"
        score = client.zscore(f"{broker.namespace}:__heartbeats__", broker.broker_id)
        if score is None:
            return False, "no consumer poll recorded yet"
        age_ms = time.time() * 1000 - float(score)
        limit_ms = max(3 * self.interval_s * 1000, float(getattr(broker, "heartbeat_timeout", 60_000)))
        if age_ms > limit_ms:
            return False, f"last consumer poll {age_ms / 1000:.0f} s ago"
        return True, "ok"

    def _beat(self, broker: Any, worker: Any, client: Any) -> None:
        while not self._stop.is_set():
            try:
                ok, why = self.consuming(broker, worker, client)
                if ok:
                    client.set(self.key, json.dumps({"at": time.time(), "pid": os.getpid(), "processed": self.processed,
                                                     "last_message_at": self.last_message_at}),
                               px=int(self.interval_s * 3000))
                else:
                    log.warning("worker heartbeat withheld: %s", why)
            except Exception as exc:  # noqa: BLE001 - keep beating through outages
                log.warning("worker heartbeat failed (%s)", type(exc).__name__)
            self._stop.wait(self.interval_s)


def worker_prometheus_env(settings: Any) -> dict[str, str]:
    """Environment of Dramatiq's Prometheus middleware (port, multiprocess directory) for
    ``settings``, or ``{}`` when ``worker_metrics_port`` is not set. ``clicktune worker`` exports it
    before starting Dramatiq: the exposition server runs in a process forked from Dramatiq's main
    process, which reads it from its environment."""
    port = getattr(settings, "worker_metrics_port", None)
    if not port:
        return {}
    directory = settings.worker_metrics_dir or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"clicktune-prometheus-{settings.redis_namespace}")
    os.makedirs(directory, exist_ok=True)
    return {"dramatiq_prom_port": str(port), "dramatiq_prom_db": directory, "PROMETHEUS_MULTIPROC_DIR": directory}


def worker_prometheus_middleware(settings: Any) -> list[dramatiq.Middleware]:
    """Dramatiq's Prometheus middleware when ``worker_metrics_port`` is set, else nothing.

    Its module reads the port and multiprocess directory from the environment on import, so they
    are set first (and on the module, in case it was imported already).
    """
    env = worker_prometheus_env(settings)
    if not env:
        return []
    os.environ.update(env)
    from dramatiq.middleware import prometheus

    prometheus.HTTP_PORT, prometheus.DB_PATH = int(env["dramatiq_prom_port"]), env["dramatiq_prom_db"]
    return [prometheus.Prometheus()]


def monitoring_middleware(settings: Any) -> list[dramatiq.Middleware]:
    """The heartbeat, plus Prometheus when configured (what :mod:`worker.broker` adds)."""
    return [WorkerHeartbeat(settings.redis_namespace, settings.worker_heartbeat_s),
            *worker_prometheus_middleware(settings)]
