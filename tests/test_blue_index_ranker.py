"""The blue index as the simulated users' search engine (the demo's sessions come from it).

Real Mongo wire server (blue pointer), embedded Chroma in a temp dir, tiny models on disk.
"""

from __future__ import annotations

from dao.blue_pointer import BluePointers
from finetuning.datasets.beir import BeirDataset
from finetuning.models.registry import load_model
from finetuning.simulation import simulate_sessions
from tests.fixtures.reindex import make_docs
from worker.indexing import ItemRef, build_index
from worker.search import BlueIndexRanker, Searcher, SearchRequest
from worker.settings import Settings
from worker.vector_store import create_vector_store


def test_simulated_users_search_what_blue_serves_and_follow_it(mongo_server, mongo_db, tmp_path, items_dir, tiny_model_dirs):
    settings = Settings(mongo_url=mongo_server.url, mongo_db=mongo_db.name, chroma_path=str(tmp_path / "chroma"),
                        mlflow_tracking_uri="")
    docs = make_docs(30)
    refs = [ItemRef(object_id=doc_id, meta={"path": f"{doc_id}.json"}) for doc_id in docs]
    searcher = Searcher(settings, db=mongo_db)
    ranker = BlueIndexRanker(searcher)
    queries = ["cancer risk study", "music news"]
    for model_dir in tiny_model_dirs:  # blue moves from the first model to the second
        build_index(store=create_vector_store(settings), pointers=BluePointers(mongo_db), model=load_model(model_dir),
                    model_ref=f"dir:{model_dir}", loader_config={"source": "local_file", "root_dir": str(items_dir)},
                    items=refs, page_size=8)
        ranked = ranker.rank_many(queries, 5)
        for query, ranking in zip(queries, ranked):
            served = searcher.search(SearchRequest(query=query, k=5)).results
            assert [doc_id for doc_id, _ in ranking] == [hit.object_id for hit in served]
            scores = [score for _, score in ranking]
            assert scores == sorted(scores, reverse=True) and len(ranking) == 5
        assert searcher.loaded_model_ref == f"dir:{model_dir}"

    corpus = {doc_id: {"title": doc["title"], "text": doc["text"]} for doc_id, doc in docs.items()}
    dataset = BeirDataset(name="tiny", corpus=corpus, queries={"q1": queries[0]},
                          qrels_by_split={"train": {"q1": {"doc000": 1}}})
    sessions = simulate_sessions(dataset, split="train", ranker=ranker, top_k=5, sessions_per_query=2, seed=0)
    shown = [[r["object_id"] for r in s["search_results"]] for s in sessions]
    assert shown == [[doc_id for doc_id, _ in ranker.rank_many([queries[0]], 5)[0]]] * 2
