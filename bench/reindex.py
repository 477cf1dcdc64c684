"""Reindex throughput: a full blue/green reindex job vs the bare cost of embedding the same items.

    python bench/reindex.py --docs 500 --model tiny
    python bench/reindex.py --docs 300 --model base:all-MiniLM-L6-v2 --dataset ../shared/data/scifact

Items are SciFact documents written as JSON files (local-file loader) when ``--dataset`` exists,
else synthetic texts. Baseline (same run, same model, same page size): load nothing, just
``model.encode_items`` over the texts page by page. Measured: the reindex job through the real
lifecycle runner (``run_task``) on a real Mongo wire server and an embedded Chroma directory —
read pages of ids/metas from the source collection, load the files, embed, upsert, verify, switch.
Both include loading the new model. Prints JSON lines; ``overhead_ratio`` = reindex seconds /
baseline seconds (1.0 = the service adds nothing to the embedding cost).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _docs(dataset: Path | None, n: int) -> dict[str, dict]:
    if dataset and (dataset / "corpus.jsonl").exists():
        docs = {}
        with open(dataset / "corpus.jsonl") as handle:
            for line in handle:
                doc = json.loads(line)
                docs[str(doc["_id"])] = {"_id": str(doc["_id"]), "title": doc.get("title", ""), "text": doc.get("text", "")}
                if len(docs) >= n:
                    break
        return docs
    words = "cancer risk blood protein gene cells music news sport car water fire apple food study effect".split()
    return {f"d{i}": {"_id": f"d{i}", "title": f"{words[i % len(words)]} {i}",
                      "text": " ".join(words[(i * k) % len(words)] for k in range(1, 40))} for i in range(n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--model", default="tiny", help="'tiny' (random, in-process) or a model reference")
    parser.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact")
    parser.add_argument("--page-size", type=int, default=128)
    args = parser.parse_args()

    import pymongo

    from dao.blue_pointer import BluePointers
    from dao.task_documents import ReindexRequest, TaskStatus
    from dao.tasks import TasksDAO
    from finetuning.models.tiny import build_tiny_text_model
    from loaders.text import item_to_text
    from finetuning.model_ref import ModelRef
    from worker.indexing import ItemRef, build_index
    from worker.jobs import reindex_job
    from worker.lifecycle import run_task
    from worker.local_services import start_mongo_wire
    from worker.settings import Settings
    from worker.vector_store import create_vector_store

    root = Path(tempfile.mkdtemp(prefix="clicktune-bench-reindex-"))
    docs = _docs(args.dataset, args.docs)
    items = root / "items"
    items.mkdir()
    os.environ["CLICKTUNE_LOADER_ALLOWED_ROOTS"] = str(items)  # the operator's allow-list: this run's items
    for doc_id, doc in docs.items():
        (items / f"{doc_id}.json").write_text(json.dumps(doc))
    if args.model == "tiny":
        old_ref = f"dir:{build_tiny_text_model(root / 'old', seed=1)}"
        new_ref = f"dir:{build_tiny_text_model(root / 'new', seed=2)}"
    else:
        old_ref = new_ref = None
    with start_mongo_wire() as mongo:
        db = pymongo.MongoClient(mongo.url)["bench"]
        settings = Settings(mongo_url=mongo.url, mongo_db="bench", chroma_path=str(root / "chroma"),
                            reindex_page_size=args.page_size, mlflow_tracking_uri="", heartbeat_seconds=2)
        if old_ref is None:  # a real model: index with it, reindex to a saved copy of it
            model = ModelRef.parse(args.model).load()
            model.save(root / "copy")
            old_ref, new_ref = args.model, f"dir:{root / 'copy'}"
        old_model = ModelRef.parse(old_ref).load()
        refs = [ItemRef(object_id=d, meta={"path": f"{d}.json"}) for d in docs]
        build_index(store=create_vector_store(settings), pointers=BluePointers(db), model=old_model,
                    model_ref=old_ref, loader_config={"source": "local_file", "root_dir": str(items)},
                    items=refs, page_size=args.page_size)
        del old_model

        # baseline: load the model and embed the texts, same pages — no loader, no store, no Mongo
        texts = [item_to_text(doc) for doc in docs.values()]
        started = time.perf_counter()
        new_model = ModelRef.parse(new_ref).load()
        for i in range(0, len(texts), args.page_size):
            new_model.encode_items(texts[i:i + args.page_size])
        baseline_s = time.perf_counter() - started
        del new_model

        dao = TasksDAO.for_kind(db, "reindex")
        task_id = dao.create(ReindexRequest(dest_run_id=new_ref)).task.id
        started = time.perf_counter()
        status = run_task("reindex", task_id, reindex_job.run, settings=settings, db=db)
        reindex_s = time.perf_counter() - started
        task = dao.get(task_id)
        if status is not TaskStatus.done:
            raise SystemExit(f"reindex ended {status}: {task.detail}")
        print(json.dumps({
            "bench": "reindex", "model": args.model, "items": len(docs), "page_size": args.page_size,
            "baseline_embed_s": round(baseline_s, 3), "baseline_items_per_s": round(len(docs) / baseline_s, 1),
            "reindex_s": round(reindex_s, 3), "reindex_items_per_s": round(len(docs) / reindex_s, 1),
            "overhead_ratio": round(reindex_s / baseline_s, 3),
            "item_count": task.result["item_count"],
        }))


if __name__ == "__main__":
    main()
