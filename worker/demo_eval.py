"""The demo's test-query figures: retrieval through a deployment's collection, as a search user gets it.

``evaluate_deployment`` scores the **test** queries through the collection a blue pointer names,
with the model that built it. When the quality gate keeps the old model, ``shadow_candidate``
indexes the trained candidate under a pointer of its own (blue is untouched) and scores it the same
way, so the demo can say what the gate refused: a real gain it could not see in held-out clicks, or
a model that was no better.
"""

from __future__ import annotations

from typing import Any

from dao.blue_pointer import DEFAULT_POINTER, BluePointers
from finetuning.metrics.retrieval import retrieval_metrics
from finetuning.model_ref import ModelRef
from worker.indexing import ItemRef, build_index
from worker.vector_store import create_vector_store

SHADOW_POINTER = "demo-candidate"


def evaluate_deployment(db: Any, settings: Any, dataset: Any, pointer_name: str = DEFAULT_POINTER,
                        model: Any = None) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@100 (and @10/@100 variants) of the test queries through ``pointer_name``;
    ``model``: the pointer's model when the caller has it loaded already."""
    pointer = BluePointers(db).get(pointer_name)
    if model is None:
        model = ModelRef.parse(pointer.model_ref).load(settings.mlflow_tracking_uri)
    query_ids = dataset.query_ids("test")
    embeddings = model.encode_queries([dataset.queries[q] for q in query_ids]).cpu().numpy()
    found = create_vector_store(settings).query(pointer.collection, embeddings, k=min(100, len(dataset.corpus)))
    qrels = dataset.qrels("test")
    return retrieval_metrics(found.ids, [qrels[q] for q in query_ids], ks=(10, 100))


def shadow_candidate(db: Any, settings: Any, dataset: Any, loader_config: dict[str, Any], best_run_id: str) -> dict[str, float]:
    """Index the best run's model under :data:`SHADOW_POINTER` and score the test queries through it."""
    model_ref = f"run:{best_run_id}"
    model = ModelRef.parse(model_ref).load(settings.mlflow_tracking_uri)
    build_index(store=create_vector_store(settings), pointers=BluePointers(db), model=model, model_ref=model_ref,
                loader_config=loader_config, pointer_name=SHADOW_POINTER, total=len(dataset.corpus),
                items=[ItemRef(object_id=doc_id, meta={"path": f"{doc_id}.json"}) for doc_id in dataset.corpus])
    return evaluate_deployment(db, settings, dataset, SHADOW_POINTER, model=model)
