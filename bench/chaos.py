"""A bounded, self-stopping fault campaign against the task lifecycle, on local processes only.

    python bench/chaos.py --faults 1000                       # the benchmark
    python bench/chaos.py --faults 50 --gap-s 0.2:0.8 --seed 1  # the short run tests/test_chaos.py makes

It starts its OWN services — an nx-27017 server on a data file, a ``redis-server`` on a free port
(append-only file, fsync always; never the machine's shared Redis), an MLflow server on a free port,
and a fresh PostgreSQL database ``clicktune_chaos_<pid>`` (on the machine's server, ``--pg-admin-dsn``,
default 127.0.0.1:5432 as user postgres) holding one small table, dropped at the end — and
``--workers`` ``clicktune worker`` processes with short leases. A feeder keeps ``--in-flight``
``probe`` tasks (``--task-s`` seconds each) queued or running, each enqueued with an idempotency key
and re-enqueued with the same key until the enqueue call succeeds (what a client does). A share of
the probes depends on the two other services (each drawn independently): ``--pg-share`` (default
half) read rows of the campaign's table on a PostgreSQL connection they hold through their sleep,
``--mlflow-share`` (default half) log a one-metric MLflow run at the end (``pg_table`` /
``mlflow_experiment``, worker/jobs/probe_job.py); such a task cannot finish while its service is
down or after its connection was killed: the attempt fails as an infrastructure error and is retried.
Meanwhile the campaign injects ``--faults`` faults, one every ``--gap-s`` seconds, chosen from
``--kinds``:

- ``kill9``:   SIGKILL of a worker's whole process group at a random moment; a replacement starts;
- ``sigstop``: SIGSTOP of a worker past its lease (``lease + 1 s``), then SIGCONT;
- ``redis``:   SIGTERM of the campaign's Redis and a restart on the same port and data;
- ``mongo``:   SIGTERM of nx-27017 and a restart on the same port and data file;
- ``pg``:      ``pg_terminate_backend`` of every backend of the campaign's OWN database (the probes'
  connections; the filter is the database name, so nobody else's backend is touched);
- ``mlflow``:  SIGTERM of the campaign's MLflow server and a restart on the same port and store. The
  restart runs in the background (a server takes seconds to start), so the campaign keeps injecting
  other faults meanwhile; no second ``mlflow`` fault is chosen until the server answers again.

After the last fault every service is brought back, stopped workers continued, and the campaign
waits (``--drain-s``) until every task is terminal. It prints one JSON object:

- ``faults``: injected, per kind;
- ``tasks``: enqueued, ``done`` / ``failed`` / ``refused`` / ``canceled``;
- ``lost``: tasks still ``pending`` at the end (nobody will run them);
  ``lost_with_message_held_by_a_dead_worker`` says how many of them have their broker message in
  the unacknowledged set of a killed worker;
- ``stuck``: tasks still ``processing`` at the end (a lease nobody takes back);
- ``concurrent_duplicates``: tasks with two executions that certainly overlapped in time (a later
  execution started while an earlier one was still inside its ``seconds``-long body, which it then
  finished), or one attempt claimed by two owners (``probe_executions``);
- ``repeated_completions``: tasks whose body ran to its end more than once, one after the other —
  at-least-once execution, e.g. a body that finished while Mongo was down, so its completion could
  not be recorded and the lease expired (``results_dropped_after_lease_loss`` counts the worker log
  lines that say so). Jobs are idempotent for this reason;
- ``resent_by_sweep``: messages the lease reaper re-sent for ``pending`` tasks whose message was
  overdue (lost: a re-send that failed while Redis was down, or held by a killed worker);
- ``recovery_s``: per fault, the time from the fault until every task that was unfinished at that
  moment had finished (p50 / p99 / max; tasks that never finished are left out — they are counted
  as lost or stuck), and how many faults had no such task;
- ``services``: for ``pg`` and ``mlflow``: tasks that asked for the service, tasks done with it
  (rows read / a run logged), attempts the service ended (``probe_executions.failed_on``), and
  ``pg_backends_terminated`` / ``mlflow_runs_in_server`` (runs the server holds at the end);
- ``seconds``: wall time; ``worker_restarts``; ``enqueue_retries``.

Exit code 0 when lost = stuck = concurrent_duplicates = 0, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from psycopg2.extensions import make_dsn  # noqa: E402

from worker.local_services import LocalProcess, free_port, port_answers, start_mlflow_server, start_mongo_wire  # noqa: E402

KINDS = ("kill9", "sigstop", "redis", "mongo", "pg", "mlflow")
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=postgres user=postgres"
PG_TABLE = "probe_rows"  # the campaign database's one table (what pg_table probes read)
MLFLOW_EXPERIMENT = "chaos-probe"
UNFINISHED = ["pending", "processing"]  # TaskStatus values that are not terminal
LIFECYCLE_ENV = {
    "CLICKTUNE_LEASE_SECONDS": "3",
    "CLICKTUNE_HEARTBEAT_SECONDS": "0.5",
    "CLICKTUNE_REAPER_INTERVAL_S": "0.5",
    "CLICKTUNE_MIN_BACKOFF_MS": "100",
    "CLICKTUNE_MAX_BACKOFF_MS": "500",
    "CLICKTUNE_MAX_RETRIES": "20",
    "CLICKTUNE_RESEND_GRACE_S": "0",
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))], 3)


class Worker:
    """A ``clicktune worker`` process group started without waiting for it (a restart must not
    block the campaign)."""

    def __init__(self, env: dict[str, str], log_dir: Path, number: int) -> None:
        clicktune = Path(sys.executable).parent / "clicktune"
        self.log = (log_dir / f"worker-{number}.log").open("wb")
        self.process = subprocess.Popen(
            [str(clicktune), "worker", "--processes", "1", "--threads", "2"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT), start_new_session=True,
        )
        self.log_path = log_dir / f"worker-{number}.log"
        self.stopped_until = 0.0
        self._ready = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        """Booted (its log says so) and alive: a fault on a worker that is still importing its
        libraries would only measure boot time."""
        if not self._ready:
            try:
                self._ready = b"ready for action" in self.log_path.read_bytes()
            except OSError:
                return False
        return self._ready and self.alive()

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()


class Campaign:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.root = Path(tempfile.mkdtemp(prefix="clicktune-chaos-"))
        self.lock = threading.Lock()
        self.workers: list[Worker] = []
        self.worker_number = 0
        self.worker_restarts = 0
        self.faults: list[tuple[str, datetime]] = []
        self.enqueued: list[str] = []
        self.enqueue_retries = 0
        self.feeding = threading.Event()
        self.stopping = threading.Event()
        self.redis: subprocess.Popen | None = None
        self.redis_port = free_port()
        self.mongo: LocalProcess | None = None
        self.mongo_port = free_port()
        self.mlflow: LocalProcess | None = None
        self.mlflow_port = free_port()
        self.mlflow_restarting: threading.Thread | None = None
        self.mlflow_start_s: list[float] = []
        self.pg_db = f"clicktune_chaos_{os.getpid()}"
        self.pg_created = False
        self.pg_backends_terminated = 0
        self.lease_s = float(LIFECYCLE_ENV["CLICKTUNE_LEASE_SECONDS"])
        self.boot_s: float | None = None

    # ------------------------------------------------------------------ services
    def start_redis(self) -> None:
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        log = (self.root / "redis.log").open("ab")
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(data),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_port(self.redis_port)

    def stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=15)

    def start_mongo(self) -> None:
        self.mongo = start_mongo_wire(self.root / "mongo.sqlite", port=self.mongo_port)

    def start_mlflow(self) -> None:
        started = time.monotonic()
        self.mlflow = start_mlflow_server(self.root / "mlflow", port=self.mlflow_port)
        self.mlflow_start_s.append(time.monotonic() - started)

    def restart_mlflow_in_background(self) -> None:
        """Stop the MLflow server now; start it again in a thread (it takes seconds to answer)."""
        if self.mlflow is not None:
            self.mlflow.stop()
        self.mlflow_restarting = threading.Thread(target=self.start_mlflow, name="mlflow-restart", daemon=True)
        self.mlflow_restarting.start()

    def mlflow_up(self) -> bool:
        return self.mlflow is not None and self.mlflow.alive() and (
            self.mlflow_restarting is None or not self.mlflow_restarting.is_alive())

    def _pg_admin(self, dbname: str | None = None):
        import psycopg2

        conn = psycopg2.connect(self.args.pg_admin_dsn, **({"dbname": dbname} if dbname else {}))
        conn.autocommit = True
        return conn

    def create_pg_database(self) -> None:
        """The campaign's own database with one small table (``PG_TABLE``)."""
        from psycopg2 import sql

        conn = self._pg_admin()
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.pg_db)))
        conn.close()
        self.pg_created = True
        conn = self._pg_admin(self.pg_db)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, text text NOT NULL)").format(sql.Identifier(PG_TABLE)))
            cur.execute(sql.SQL("INSERT INTO {} SELECT i, 'row ' || i FROM generate_series(1, 20) AS i").format(sql.Identifier(PG_TABLE)))
        conn.close()

    def drop_pg_database(self) -> None:
        from psycopg2 import sql

        if not self.pg_created:
            return
        conn = self._pg_admin()
        with conn.cursor() as cur:  # WITH (FORCE) ends the backends of this database only
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.pg_db)))
        conn.close()
        self.pg_created = False

    def kill_pg_backends(self) -> int:
        """``pg_terminate_backend`` of every backend connected to the campaign's database (and to no
        other database), except the one asking."""
        conn = self._pg_admin()
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (self.pg_db,))
            killed = int(cur.fetchone()[0])
        conn.close()
        return killed

    def _wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_answers(port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers on port {port}")
            time.sleep(0.05)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "CLICKTUNE_MONGO_URL": f"mongodb://127.0.0.1:{self.mongo_port}/?directConnection=true",
            "CLICKTUNE_MONGO_DB": "chaos",
            "CLICKTUNE_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "CLICKTUNE_REDIS_NAMESPACE": "clicktune-chaos",
            "CLICKTUNE_BROKER": "redis",
            "CLICKTUNE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.mlflow_port}",
            "CLICKTUNE_PG_DSN": make_dsn(self.args.pg_admin_dsn, dbname=self.pg_db),
            "CLICKTUNE_LOADER_ALLOWED_TABLES": PG_TABLE,
            "PYTHONUNBUFFERED": "1",
            **LIFECYCLE_ENV,
        }
        env.setdefault("PYTHONPATH", str(REPO_ROOT))
        return env

    def start_worker(self) -> None:
        self.worker_number += 1
        self.workers.append(Worker(self.env(), self.root, self.worker_number))

    # ------------------------------------------------------------------ client side
    def client(self):
        from worker.client import ClicktuneClient
        from worker.settings import Settings

        env = self.env()
        values = {k[len("CLICKTUNE_"):].lower(): v for k, v in env.items() if k.startswith("CLICKTUNE_")}
        return ClicktuneClient(Settings(**values))

    def feed(self) -> None:
        """Keep ``in_flight`` tasks unfinished; every enqueue retried with its key until it lands."""
        client = self.client()
        rng = random.Random(self.args.seed + 1)  # the feeder's own generator (another thread)
        dao = None
        number = 0
        while self.feeding.is_set():
            try:
                if dao is None:
                    dao = client.dao("probe")
                unfinished = dao.collection.count_documents({"status": {"$in": UNFINISHED}})
            except Exception:
                time.sleep(0.2)
                continue
            if unfinished >= self.args.in_flight:
                time.sleep(0.1)
                continue
            key = f"chaos-{number}"
            seconds = round(rng.uniform(*self.args.task_s), 2)
            touches = {}
            if rng.random() < self.args.pg_share:
                touches["pg_table"] = PG_TABLE
            if rng.random() < self.args.mlflow_share:
                touches["mlflow_experiment"] = MLFLOW_EXPERIMENT
            while not self.stopping.is_set():
                try:
                    task_id = client.enqueue_probe(seconds, idempotency_key=key, **touches)
                    break
                except Exception:
                    self.enqueue_retries += 1
                    time.sleep(0.2)
            else:
                return
            with self.lock:
                self.enqueued.append(task_id)
            number += 1

    # ------------------------------------------------------------------ faults
    def _victims(self) -> list[Worker]:
        """Workers a process fault may hit: booted, alive, not stopped; at least one other worker
        stays up so the campaign measures recovery, not an empty pool."""
        now = time.monotonic()
        candidates = [w for w in self.workers if w.ready() and w.stopped_until < now]
        return candidates if len(candidates) > 1 or len(self.workers) == 1 else []

    def choose(self) -> str:
        """A fault kind from ``--kinds``; a process fault only when a worker is there to take it."""
        kinds = list(self.args.kinds)
        if not self._victims():
            kinds = [kind for kind in kinds if kind not in ("kill9", "sigstop")] or kinds
        if not self.mlflow_up():
            kinds = [kind for kind in kinds if kind != "mlflow"] or kinds
        return self.rng.choice(kinds)

    def inject(self, kind: str) -> None:
        if kind in ("kill9", "sigstop") and not self._victims() or kind == "mlflow" and not self.mlflow_up():
            return
        self.faults.append((kind, _now()))
        if kind == "kill9":
            victim = self.rng.choice(self._victims())
            victim.kill()
            self.workers.remove(victim)
            self.start_worker()
            self.worker_restarts += 1
        elif kind == "sigstop":
            victim = self.rng.choice(self._victims())
            victim.signal(signal.SIGSTOP)
            victim.stopped_until = time.monotonic() + self.lease_s + 1.0
            threading.Timer(self.lease_s + 1.0, victim.signal, args=(signal.SIGCONT,)).start()
        elif kind == "redis":
            self.stop_redis()
            time.sleep(self.rng.uniform(0.0, 0.5))
            self.start_redis()
        elif kind == "mongo":
            assert self.mongo is not None
            self.mongo.stop()
            time.sleep(self.rng.uniform(0.0, 0.5))
            self.start_mongo()
        elif kind == "pg":
            self.pg_backends_terminated += self.kill_pg_backends()
        elif kind == "mlflow":
            self.restart_mlflow_in_background()
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            self.start_redis()
            self.start_mongo()
            self.create_pg_database()
            self.restart_mlflow_in_background()  # the first start, while the workers boot
            for _ in range(self.args.workers):
                self.start_worker()
            client = self.client()
            dao = client.dao("probe")
            self.feeding.set()
            feeder = threading.Thread(target=self.feed, name="feeder", daemon=True)
            feeder.start()
            boot_deadline = time.monotonic() + 300
            while not (any(w.ready() for w in self.workers) and self.mlflow_up()) and time.monotonic() < boot_deadline:
                time.sleep(0.2)
            self.boot_s = round(time.monotonic() - started, 1)
            deadline = started + self.args.max_seconds
            while len(self.faults) < self.args.faults and time.monotonic() < deadline:
                time.sleep(self.rng.uniform(*self.args.gap_s))
                self.inject(self.choose())
            self.feeding.clear()
            feeder.join(timeout=30)
            self._heal()
            drained = self._drain(dao, time.monotonic() + self.args.drain_s)
            return self._report(client, drained, time.monotonic() - started)
        finally:
            self.stopping.set()
            self.feeding.clear()
            self._shutdown()

    def _heal(self) -> None:
        """Every service up, no worker stopped, the configured number of workers alive."""
        if self.redis is None or self.redis.poll() is not None:
            self.start_redis()
        if self.mongo is None or not self.mongo.alive():
            self.start_mongo()
        if self.mlflow_restarting is not None:
            self.mlflow_restarting.join()
        if not self.mlflow_up():
            self.start_mlflow()
        for worker in self.workers:
            worker.signal(signal.SIGCONT)
        self.workers = [w for w in self.workers if w.alive()]
        while len(self.workers) < self.args.workers:
            self.start_worker()

    def _drain(self, dao, deadline: float) -> bool:
        while time.monotonic() < deadline:
            try:
                if dao.collection.count_documents({"status": {"$in": UNFINISHED}}) == 0:
                    return True
            except Exception:
                pass
            time.sleep(0.25)
        return False

    def _report(self, client, drained: bool, seconds: float) -> dict[str, Any]:
        db = client.dao("probe").collection.database
        tasks = {doc["_id"]: doc for doc in db["probe_tasks"].find({}, {
            "status": 1, "created_at": 1, "finished_at": 1, "seconds": 1, "pg_table": 1, "mlflow_experiment": 1, "result": 1})}
        statuses = Counter(doc["status"] for doc in tasks.values())
        executions: dict[str, list[dict]] = {}
        for execution in db["probe_executions"].find({}, {"_id": 0}):
            executions.setdefault(execution["task_id"], []).append(execution)
        duplicates = [task_id for task_id, runs in executions.items()
                      if _concurrent_duplicate(runs, float(tasks.get(task_id, {}).get("seconds") or 0))]
        repeated = [task_id for task_id, runs in executions.items() if sum(1 for run in runs if run.get("finished")) > 1]
        recovery, untouched = _recovery(self.faults, tasks.values())
        return {
            "faults": {"injected": len(self.faults), **Counter(kind for kind, _ in self.faults)},
            "tasks": {"enqueued": len(self.enqueued), "in_store": len(tasks), **{s: statuses.get(s, 0) for s in
                                                                                   ("done", "failed", "refused", "canceled")}},
            "lost": statuses.get("pending", 0),
            "lost_with_message_held_by_a_dead_worker": self._held_by_dead_workers(
                {task_id for task_id, doc in tasks.items() if doc["status"] == "pending"}),
            "stuck": statuses.get("processing", 0),
            "concurrent_duplicates": len(duplicates),
            "duplicate_task_ids": duplicates[:10],
            "repeated_completions": len(repeated),
            "results_dropped_after_lease_loss": self._count_in_logs(b"finished after its lease was lost"),
            "resent_by_sweep": self._count_in_logs(b"with no claim -> re-sent"),
            "executions": sum(len(runs) for runs in executions.values()),
            "services": self._services(tasks.values(), executions.values()),
            "recovery_s": {"p50": _percentile(recovery, 0.5), "p99": _percentile(recovery, 0.99),
                           "max": round(max(recovery), 3) if recovery else None, "faults_measured": len(recovery),
                           "faults_without_unfinished_tasks": untouched},
            "drained": drained,
            "worker_restarts": self.worker_restarts,
            "enqueue_retries": self.enqueue_retries,
            "seconds": round(seconds, 1),
            "ready_s": self.boot_s,  # until one worker had booted and MLflow answered: the first fault waits for both
            "settings": {"workers": self.args.workers, "in_flight": self.args.in_flight, "task_s": self.args.task_s,
                         "gap_s": self.args.gap_s, "kinds": self.args.kinds, "seed": self.args.seed,
                         "pg_share": self.args.pg_share, "mlflow_share": self.args.mlflow_share,
                         "lease_s": self.lease_s},
        }

    def _services(self, tasks, executions) -> dict[str, Any]:
        """What the probes did with PostgreSQL and MLflow (see the module docstring, ``services``)."""
        tasks, attempts = list(tasks), [run for runs in executions for run in runs]
        done = [doc for doc in tasks if doc["status"] == "done"]
        return {
            "pg": {"tasks": sum(1 for doc in tasks if doc.get("pg_table")),
                   "done_with_rows_read": sum(1 for doc in done if (doc.get("result") or {}).get("pg_rows_read")),
                   "attempts_ended_by_pg": sum(1 for run in attempts if run.get("failed_on") == "pg"),
                   "pg_backends_terminated": self.pg_backends_terminated},
            "mlflow": {"tasks": sum(1 for doc in tasks if doc.get("mlflow_experiment")),
                       "done_with_run_logged": sum(1 for doc in done if (doc.get("result") or {}).get("mlflow_run_id")),
                       "attempts_ended_by_mlflow": sum(1 for run in attempts if run.get("failed_on") == "mlflow"),
                       "mlflow_runs_in_server": self._mlflow_runs(),
                       "server_start_s": {"p50": _percentile(self.mlflow_start_s, 0.5),
                                          "max": round(max(self.mlflow_start_s), 1) if self.mlflow_start_s else None}},
        }

    def _mlflow_runs(self) -> int:
        """Runs of ``MLFLOW_EXPERIMENT`` the campaign's MLflow server holds (-1 if it cannot say)."""
        try:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=f"http://127.0.0.1:{self.mlflow_port}")
            experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
            if experiment is None:
                return 0
            return len(client.search_runs([experiment.experiment_id], max_results=50_000))
        except Exception:
            return -1

    def _held_by_dead_workers(self, task_ids: set[str]) -> int:
        """How many of ``task_ids`` have their broker message in the unacknowledged set of a worker
        whose broker heartbeat stopped (a prefetched message of a killed worker: the Redis broker
        gives it back only after its heartbeat timeout, by a randomly triggered maintenance pass)."""
        if not task_ids:
            return 0
        import redis

        namespace = self.env()["CLICKTUNE_REDIS_NAMESPACE"]
        try:
            conn = redis.Redis(port=self.redis_port, socket_timeout=5)
            beats = {k.decode(): v for k, v in conn.zrange(f"{namespace}:__heartbeats__", 0, -1, withscores=True)}
            stale_before = time.time() * 1000 - 2 * self.lease_s * 1000
            held: set[str] = set()
            for key in conn.scan_iter(f"{namespace}:__acks__.*"):
                worker_id = key.decode().split("__acks__.", 1)[1].rsplit(".", 1)[0]
                if beats.get(worker_id, 0) > stale_before:
                    continue
                for redis_id in conn.smembers(key):
                    raw = conn.hget(f"{namespace}:probe.msgs", redis_id)
                    if raw:
                        held.update(str(arg) for arg in json.loads(raw).get("args", []))
            conn.close()
        except Exception:
            return -1
        return len(task_ids & held)

    def _count_in_logs(self, marker: bytes) -> int:
        return sum(path.read_bytes().count(marker) for path in self.root.glob("worker-*.log"))

    def _shutdown(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        if self.mlflow_restarting is not None:
            self.mlflow_restarting.join(timeout=200)
        if self.mlflow is not None:
            self.mlflow.stop()
        try:
            self.drop_pg_database()
        except Exception as exc:  # report it, but stop the other services anyway
            print(f"could not drop database {self.pg_db}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if self.mongo is not None:
            self.mongo.stop()
        self.stop_redis()


def _concurrent_duplicate(runs: list[dict], seconds: float) -> bool:
    """Two executions of one task that certainly ran at the same time: an execution that ran its
    body to the end was busy for at least ``seconds`` after it started, so a later execution that
    started within that window overlapped it; or one attempt claimed by two owners. (An execution
    that never finished may have died at any moment: it cannot be placed, so it is not counted.)"""
    ordered = sorted(runs, key=lambda run: _aware(run["started_at"]))
    for i, earlier in enumerate(ordered):
        for later in ordered[i + 1:]:
            if earlier.get("owner") != later.get("owner") and earlier.get("attempt") == later.get("attempt"):
                return True
            if earlier.get("finished") and (_aware(later["started_at"]) - _aware(earlier["started_at"])).total_seconds() < seconds:
                return True
    return False


def _recovery(faults: list[tuple[str, datetime]], tasks) -> tuple[list[float], int]:
    """Per fault: seconds until every task unfinished at the fault had finished (tasks that never
    finished are left out: ``lost`` / ``stuck`` count them)."""
    docs = [doc for doc in tasks if doc.get("created_at") is not None]
    times: list[float] = []
    untouched = 0
    for _, moment in faults:
        open_then = [doc for doc in docs if _aware(doc["created_at"]) <= moment
                     and (doc.get("finished_at") is None or _aware(doc["finished_at"]) > moment)]
        if not open_then:
            untouched += 1
            continue
        open_then = [doc for doc in open_then if doc.get("finished_at") is not None]  # the rest: lost / stuck
        if not open_then:
            continue
        times.append(max((_aware(doc["finished_at"]) - moment).total_seconds() for doc in open_then))
    return times, untouched


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):  # a server-side timestamp may come back as ISO text
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=1000, help="faults to inject (default 1000)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated fault kinds (default {','.join(KINDS)})")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=6, help="unfinished tasks the feeder keeps")
    parser.add_argument("--task-s", type=_pair, default=(0.2, 1.5), help="probe duration range LOW:HIGH")
    parser.add_argument("--gap-s", type=_pair, default=(0.5, 2.5), help="pause between faults LOW:HIGH")
    parser.add_argument("--drain-s", type=float, default=150.0, help="wait for every task to end after the last fault")
    parser.add_argument("--max-seconds", type=float, default=6 * 3600, help="stop injecting after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pg-share", type=float, default=0.5, help="share of probes that read PostgreSQL rows")
    parser.add_argument("--mlflow-share", type=float, default=0.5, help="share of probes that log an MLflow run")
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN, help="PostgreSQL server the campaign creates "
                        "its database on (a superuser; never printed)")
    args = parser.parse_args(argv)
    args.kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    report = Campaign(parse_args(argv)).run()
    print(json.dumps(report, indent=2, default=str))
    ok = report["lost"] == 0 and report["stuck"] == 0 and report["concurrent_duplicates"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
