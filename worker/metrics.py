"""Prometheus metrics of the service: the API's own counters and the service state read from Mongo.

Two kinds of numbers, both exposed by ``GET /metrics`` of ``clicktune api``:

- **counters of this process** (:class:`ApiMetrics`): requests by method, route template and
  status, request latency by route, and what ingest calls stored or rejected;
- **state of the deployment** (:class:`ServiceStateCollector`), read from Mongo at scrape time so
  every API replica reports the same truth whatever process did the work: tasks by kind and status,
  training steps reported by fine-tuning tasks, clickstream sessions by batch status, and per blue
  deployment the last deploy time, the blue model's age, its version and item count.

Workers export Dramatiq's own metrics (messages processed, errors, retries, durations) with
``dramatiq.middleware.prometheus.Prometheus`` when ``CLICKTUNE_WORKER_METRICS_PORT`` is set (see
:mod:`worker.monitoring`).

Each :class:`ApiMetrics` has its own :class:`~prometheus_client.CollectorRegistry`, so several
apps in one process (tests) never clash on metric names.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pymongo.database import Database

from dao.blue_pointer import BluePointers
from dao.clickstream import BATCHES
from dao.task_documents import TASK_KINDS, TaskStatus, as_utc, utcnow
from dao.clickstream_documents import IngestReport

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceStateCollector(Collector):
    """Gauges computed from Mongo at every scrape (a handful of indexed queries).

    ``db`` is a callable so the collector can be registered before any connection is opened.
    A Mongo failure yields ``clicktune_state_up 0`` instead of failing the whole scrape.
    """

    def __init__(self, db: Callable[[], Database]) -> None:
        self._db = db

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not query Mongo

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("clicktune_state_up", "1 when the service state could be read from Mongo.")
        try:
            families = list(self._collect(self._db()))
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Mongo is down
            log.warning("metrics: could not read the service state (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self, db: Database) -> Iterable[Metric]:
        tasks = GaugeMetricFamily("clicktune_tasks", "Tasks by kind and status.", labels=["kind", "status"])
        steps = GaugeMetricFamily("clicktune_training_steps",
                                  "Training steps reported by fine-tuning tasks (sum of each task's last step).")
        for kind, spec in sorted(TASK_KINDS.items()):
            counts = {status.value: 0 for status in TaskStatus}
            collection = db[spec.collection]
            for status in counts:
                counts[status] = collection.count_documents({"status": status})
            for status, count in counts.items():
                tasks.add_metric([kind, status], count)
        steps.add_metric([], _training_steps(db))
        yield tasks
        yield steps

        sessions = GaugeMetricFamily("clicktune_clickstream_sessions", "Stored sessions by batch status.",
                                     labels=["batch_status"])
        events = GaugeMetricFamily("clicktune_clickstream_events", "Stored events by batch status.",
                                   labels=["batch_status"])
        by_status: dict[str, list[int]] = {"open": [0, 0], "released": [0, 0]}
        for batch in db[BATCHES].find({}, {"status": 1, "session_count": 1, "event_count": 1}):
            pair = by_status.setdefault(str(batch.get("status")), [0, 0])
            pair[0] += int(batch.get("session_count") or 0)
            pair[1] += int(batch.get("event_count") or 0)
        for status, (n_sessions, n_events) in sorted(by_status.items()):
            sessions.add_metric([status], n_sessions)
            events.add_metric([status], n_events)
        yield sessions
        yield events

        deployed = GaugeMetricFamily("clicktune_blue_last_deploy_timestamp_seconds",
                                     "When the blue pointer last switched (Unix time).", labels=["deployment"])
        age = GaugeMetricFamily("clicktune_blue_model_age_seconds", "Seconds since the blue model was deployed.",
                                labels=["deployment"])
        version = GaugeMetricFamily("clicktune_blue_version", "Blue pointer version (+1 per switch).",
                                    labels=["deployment"])
        items = GaugeMetricFamily("clicktune_blue_items", "Items in the blue collection.", labels=["deployment"])
        now = utcnow()
        for pointer in BluePointers(db).list():
            updated = as_utc(pointer.updated_at)
            deployed.add_metric([pointer.name], updated.timestamp())
            age.add_metric([pointer.name], max(0.0, (now - updated).total_seconds()))
            version.add_metric([pointer.name], pointer.version)
            items.add_metric([pointer.name], pointer.item_count)
        yield from (deployed, age, version, items)


def _training_steps(db: Database) -> float:
    spec = TASK_KINDS.get("fine_tuning")
    if spec is None:
        return 0.0
    total = 0.0
    for doc in db[spec.collection].find({}, {"progress": 1}):  # plain projection: portable to nx-27017
        step = (doc.get("progress") or {}).get("step")
        if isinstance(step, (int, float)):
            total += step
    return total


class ApiMetrics:
    """Counters and histograms of one API process, plus the service state collector."""

    def __init__(self, db: Callable[[], Database] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("clicktune_api_requests", "HTTP requests by method, route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("clicktune_api_request_duration_seconds", "HTTP request latency by route.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.sessions = Counter("clicktune_ingest_sessions", "Sessions received by ingest calls, by outcome.",
                                ["outcome"], registry=self.registry)
        self.events = Counter("clicktune_ingest_events", "Events received by ingest calls, by outcome.",
                              ["outcome"], registry=self.registry)
        self.rejected = Counter("clicktune_ingest_rejected_records", "Records rejected by ingest calls.",
                                registry=self.registry)
        if db is not None:
            self.registry.register(ServiceStateCollector(db))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_ingest(self, report: IngestReport) -> None:
        self.sessions.labels("accepted").inc(report.accepted_sessions)
        self.sessions.labels("duplicate").inc(report.duplicate_sessions)
        self.events.labels("accepted").inc(report.accepted_events)
        self.events.labels("duplicate").inc(report.duplicate_events)
        self.rejected.inc(len(report.rejects))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
