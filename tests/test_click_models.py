"""Simulated users beyond PBM: each click model's statistics match its definition (cascade,
DBN, UBM, trust bias, misleading snippets), Zipf query popularity gives its documented share of
queries seen once, and every simulation is deterministic per seed. Small synthetic rankings, no
model: seconds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from finetuning.datasets import BeirDataset
from finetuning.simulation import (
    CLICK_MODELS,
    CascadeClickModel,
    DynamicBayesianNetworkClickModel,
    PositionBasedClickModel,
    TrustBiasClickModel,
    UniformPopularity,
    UserBrowsingClickModel,
    ZipfPopularity,
    make_click_model,
    make_popularity,
    parse_params,
    simulate_sessions,
)

REPO = Path(__file__).resolve().parents[1]
N_DOCS_PER_QUERY = 10


class FixedRanker:
    """Shows each query's own ten documents in a fixed order (relevant ones at set ranks)."""

    name = "fixed"

    def __init__(self, rankings: dict[str, list[str]]) -> None:
        self.rankings = rankings

    def rank_many(self, queries, top_k):
        return [[(doc, 1.0 / rank) for rank, doc in enumerate(self.rankings[q][:top_k], start=1)] for q in queries]


def synthetic(n_queries: int = 60, relevant_ranks: tuple[int, ...] = (2, 5)) -> tuple[BeirDataset, FixedRanker]:
    """``n_queries`` train queries, each with ten documents of its own; relevant at ``relevant_ranks``."""
    corpus, queries, qrels, rankings = {}, {}, {}, {}
    for q in range(n_queries):
        query_id, text = f"q{q}", f"query number {q}"
        docs = [f"q{q}-d{r}" for r in range(1, N_DOCS_PER_QUERY + 1)]
        corpus.update({d: {"title": "", "text": f"document {d}"} for d in docs})
        queries[query_id] = text
        qrels[query_id] = {docs[r - 1]: 1 for r in relevant_ranks}
        rankings[text] = docs
    return BeirDataset(corpus=corpus, queries=queries, qrels_by_split={"train": qrels}, name="synthetic"), FixedRanker(rankings)


def click_matrix(model, relevance, n: int = 20000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    doc_ids = [f"d{i}" for i in range(len(relevance))]
    return np.array([model.clicks(relevance, rng=rng, query_id="q", doc_ids=doc_ids) for _ in range(n)])


# --------------------------------------------------------------------------- cascade and DBN
def test_cascade_clicks_at_most_once_with_the_cascade_probabilities():
    model = CascadeClickModel(attractiveness_relevant=0.6, attractiveness_irrelevant=0.1)
    relevance = [False, True, False, True, False]
    clicks = click_matrix(model, relevance)
    assert clicks.sum(axis=1).max() == 1  # the user stops at the first click
    attract = [0.6 if rel else 0.1 for rel in relevance]
    expected = [a * np.prod([1 - b for b in attract[:r]]) for r, a in enumerate(attract)]
    assert np.allclose(clicks.mean(axis=0), expected, atol=0.012), (clicks.mean(axis=0), expected)


def test_dbn_never_clicks_below_a_satisfying_click():
    model = DynamicBayesianNetworkClickModel(gamma=0.9, satisfaction_relevant=1.0, satisfaction_irrelevant=0.0)
    relevance = [False, True, False, True, True, False, False, True, False, False]
    clicks = click_matrix(model, relevance, n=5000)
    relevant = np.array(relevance)
    saw_irrelevant_then_more = False
    for row in clicks:
        ranks = np.flatnonzero(row)
        satisfied = [r for r in ranks if relevant[r]]
        if satisfied:  # every click above the first satisfying one was on an irrelevant result
            assert ranks.max() == satisfied[0]
        saw_irrelevant_then_more |= len(ranks) > 1
    assert saw_irrelevant_then_more  # an unsatisfying (irrelevant) click does not end the session


def test_dbn_clicks_per_session_fall_as_satisfaction_rises():
    relevance = [True, False, True, True, False, True, False, False, True, False]
    means = [
        click_matrix(DynamicBayesianNetworkClickModel(satisfaction_relevant=s), relevance, n=8000).sum(axis=1).mean()
        for s in (0.0, 0.3, 0.6, 1.0)
    ]
    assert all(a > b + 0.05 for a, b in zip(means, means[1:])), means
    assert means[-1] <= 1.0 + 0.1  # fully satisfied users stop at the first relevant click


def test_dbn_examination_decays_with_perseverance():
    # every examined result is clicked and never satisfies: click rate at rank r = gamma ** (r - 1)
    model = DynamicBayesianNetworkClickModel(gamma=0.7, satisfaction_irrelevant=0.0, attractiveness_irrelevant=1.0)
    clicks = click_matrix(model, [False] * 6)
    assert np.allclose(clicks.mean(axis=0), [0.7**r for r in range(6)], atol=0.012)


# --------------------------------------------------------------------------- UBM
def test_ubm_examination_depends_on_the_distance_to_the_last_click():
    model = UserBrowsingClickModel(attractiveness_relevant=0.5)
    clicks = click_matrix(model, [True] * 5, n=30000)
    rank = 5
    rates = {}
    for last in range(rank):  # last click above rank 5 (0: none)
        above = clicks[:, : rank - 1]
        last_click = np.where(above.any(axis=1), rank - 1 - np.argmax(above[:, ::-1], axis=1), 0)
        rows = clicks[last_click == last]
        rates[last] = rows[:, rank - 1].mean()
        expected = rank**-0.5 * (rank - last) ** -0.5 * 0.5
        assert abs(rates[last] - expected) < 4 * np.sqrt(expected * (1 - expected) / len(rows)) + 0.005, (last, rates[last], expected)
    assert rates[4] > rates[3] > rates[2] > rates[1] > rates[0]  # the closer the last click, the likelier
    assert model.examination_probability(rank, rank) == pytest.approx(PositionBasedClickModel().examination_probability(rank))


def test_ubm_table():
    model = UserBrowsingClickModel(gamma=[[1.0], [0.9, 0.5], [0.8, 0.4, 0.2]])
    assert model.examination_probability(3, 2) == 0.4 and model.examination_probability(7, 1) == 0.8
    with pytest.raises(ValueError):
        model.examination_probability(2, 3)


# --------------------------------------------------------------------------- trust bias
def test_trust_bias_irrelevant_click_rate_falls_with_rank_beyond_examination():
    everyone_examines = [1.0] * 10
    trust = TrustBiasClickModel(examination=everyone_examines)
    pbm = PositionBasedClickModel(examination=everyone_examines)
    irrelevant = click_matrix(trust, [False] * 10).mean(axis=0)
    assert np.allclose(irrelevant, [0.65 / r for r in range(1, 11)], atol=0.012)
    assert all(a > b for a, b in zip(irrelevant, irrelevant[1:])), irrelevant
    flat = click_matrix(pbm, [False] * 10).mean(axis=0)
    assert flat.max() - flat.min() < 0.02  # PBM: an examined irrelevant result is clicked alike anywhere
    relevant = click_matrix(trust, [True] * 10).mean(axis=0)
    assert np.allclose(relevant, [1 - (r + 1) / 100 for r in range(1, 11)], atol=0.01)
    assert TrustBiasClickModel().click_probability(3, relevant=False) == pytest.approx(0.65 / 9)


# --------------------------------------------------------------------------- misleading snippets
def test_misleading_snippets_attract_clicks_in_every_session_of_their_query():
    dataset, ranker = synthetic(n_queries=80, relevant_ranks=(3,))

    def irrelevant_clicks(model_name: str) -> tuple[Counter, list[dict]]:
        model = make_click_model(model_name, seed=5)
        sessions = simulate_sessions(dataset, ranker=ranker, sessions_per_query=20, seed=1, click_model=model)
        counts = Counter()
        for s in sessions:
            query_id = s["search_meta"]["query_id"]
            for event in s["events"]:
                if event["object_id"] not in dataset.qrels("train")[query_id]:
                    counts[query_id, event["object_id"]] += 1
        return counts, sessions

    misleading, sessions = irrelevant_clicks("misleading")
    snippets = make_click_model("misleading", seed=5).snippets
    flags = [snippets.is_misleading(q, d, relevant=False) for q in dataset.queries for d in ranker.rankings[dataset.queries[q]][3:]]
    assert 0.05 < np.mean(flags) < 0.15  # about misleading_share (0.1) of the irrelevant pairs
    top_misleading = [(q, d) for q in dataset.queries for d in ranker.rankings[dataset.queries[q]][:2] if snippets.is_misleading(q, d, False)]
    assert top_misleading
    for pair in top_misleading:  # examined in >= 1/2 of sessions, attractive 0.6: clicked in many of the 20
        assert misleading[pair] >= 3, (pair, misleading[pair])
    flagged = sum(n for (q, d), n in misleading.items() if snippets.is_misleading(q, d, False))
    assert flagged > 0.6 * sum(misleading.values())  # the noise is concentrated on the misleading pairs
    pbm, _ = irrelevant_clicks("pbm")
    assert max(misleading.values()) >= 8 > max(pbm.values())  # PBM noise is spread thin, not repeated
    assert sessions[0]["search_meta"]["click_model"]["snippets"]["misleading_share"] == 0.1


def test_snippet_values_are_per_pair_and_seeded():
    model = make_click_model("misleading", seed=2, misleading_share=0.5, relevant_low=0.8)
    snippets = model.snippets
    assert snippets.misleading_share == 0.5 and snippets.relevant_low == 0.8 and snippets.seed == 2
    values = [snippets.attractiveness("q1", f"d{i}", relevant=True) for i in range(50)]
    assert min(values) >= 0.8 and max(values) <= 1.0 and len(set(values)) == 50
    assert snippets.attractiveness("q1", "d3", True) == make_click_model("misleading", seed=2, relevant_low=0.8).snippets.attractiveness("q1", "d3", True)
    other = make_click_model("misleading", seed=3, misleading_share=0.5).snippets
    assert [snippets.is_misleading("q", f"d{i}", False) for i in range(40)] != [other.is_misleading("q", f"d{i}", False) for i in range(40)]
    with pytest.raises(ValueError):
        model.clicks([True, False])  # per-pair attractiveness needs the query and documents


# --------------------------------------------------------------------------- popularity
def test_zipf_share_of_queries_seen_once_matches_the_documented_figure():
    popularity = ZipfPopularity()
    assert popularity.share_seen_once() == pytest.approx(0.414, abs=0.001)
    assert popularity.mean_sessions() == pytest.approx(7.7, abs=0.05)
    counts = np.array([popularity.sessions(f"query-{i}", seed=0) for i in range(6000)])
    assert abs((counts == 1).mean() - 0.414) < 0.02
    assert counts.min() == 1 and counts.max() <= 100 and abs(counts.mean() - 7.7) < 1.0
    assert (counts >= 20).mean() > 0.05  # a head of popular queries
    # through the simulator: a query's sessions do not depend on the other queries
    dataset, ranker = synthetic(n_queries=300)
    sessions = simulate_sessions(dataset, ranker=ranker, seed=4, popularity=popularity)
    per_query = Counter(s["search_meta"]["query_id"] for s in sessions)
    assert len(per_query) == 300 and abs(sum(n == 1 for n in per_query.values()) / 300 - 0.414) < 0.08
    assert all(per_query[q] == popularity.sessions(q, seed=4) for q in per_query)
    assert sessions[0]["search_meta"]["popularity"] == {"name": "zipf", "exponent": 1.5, "max_sessions": 100}
    with pytest.raises(ValueError):
        simulate_sessions(dataset, ranker=ranker, sessions_per_query=3, popularity=popularity)


def test_uniform_popularity_is_sessions_per_query():
    dataset, ranker = synthetic(n_queries=5)
    sessions = simulate_sessions(dataset, ranker=ranker, seed=0, popularity=make_popularity("uniform", sessions_per_query=4))
    assert Counter(s["search_meta"]["query_id"] for s in sessions) == {q: 4 for q in dataset.queries}
    plain = simulate_sessions(dataset, ranker=ranker, seed=0, sessions_per_query=4)
    def clicked(log):
        return [[(e["object_id"], e["created_at"]) for e in s["events"]] for s in log]

    assert clicked(sessions) == clicked(plain)  # same draws, same clicks (ids differ: the simulation says how it was made)
    assert UniformPopularity(1).share_seen_once() == 1.0


# --------------------------------------------------------------------------- determinism, registry
@pytest.mark.parametrize("name", sorted(CLICK_MODELS))
def test_every_model_is_deterministic_per_seed(name):
    dataset, ranker = synthetic(n_queries=40)

    def run(seed: int) -> list[dict]:
        return simulate_sessions(dataset, ranker=ranker, seed=seed, click_model=make_click_model(name, seed=seed), popularity=ZipfPopularity(max_sessions=8))

    first = run(7)
    assert json.dumps(run(7), sort_keys=True) == json.dumps(first, sort_keys=True)
    assert [s["events"] for s in run(8)] != [s["events"] for s in first]
    assert first[0]["search_meta"]["click_model"]["name"] == {"misleading": "pbm", "dbn-misleading": "dbn"}.get(name, name)
    clicks = sum(len(s["events"]) for s in first)
    assert 0 < clicks < sum(len(s["search_results"]) for s in first)


def test_default_pbm_records_the_same_parameters_as_before():
    assert PositionBasedClickModel().params() == {
        "name": "pbm", "examination": "1/rank^1", "attractiveness_relevant": 0.9, "attractiveness_irrelevant": 0.05,
    }
    assert make_click_model("pbm").params() == PositionBasedClickModel().params()


def test_registry_names_and_parameters():
    assert {"pbm", "cascade", "dbn", "ubm", "trust-bias", "misleading", "dbn-misleading"} <= set(CLICK_MODELS)
    assert make_click_model("dbn-misleading", seed=1, gamma=0.5, misleading=0.9).params()["snippets"]["misleading"] == 0.9
    with pytest.raises(KeyError):
        make_click_model("nope")
    with pytest.raises(TypeError):
        make_click_model("cascade", gamma=0.5)
    with pytest.raises(KeyError):
        make_popularity("pareto")
    assert parse_params(["gamma=0.7", "examination=[1, 0.5]", "label=x"]) == {"gamma": 0.7, "examination": [1, 0.5], "label": "x"}
    with pytest.raises(ValueError):
        parse_params(["gamma"])


def test_simulate_clicks_command_takes_a_click_model_a_popularity_and_dwell(tmp_path):
    from typer.testing import CliRunner

    from worker.cli.main import app

    out = tmp_path / "s.jsonl"
    args = ["simulate-clicks", "--dataset", str(REPO / "examples" / "scifact-slice"), "--out", str(out), "--top-k", "5", "--seed", "3"]
    result = CliRunner().invoke(app, [*args, "--click-model", "dbn", "--click-param", "gamma=0.6", "--popularity", "zipf"])
    assert result.exit_code == 0, result.output
    sessions = [json.loads(line) for line in out.read_text().splitlines()]
    meta = sessions[0]["search_meta"]
    assert meta["click_model"]["name"] == "dbn" and meta["click_model"]["gamma"] == 0.6
    assert meta["popularity"]["name"] == "zipf" and "seen once" in result.output
    per_query = Counter(s["search_meta"]["query_id"] for s in sessions)
    train_queries = BeirDataset.load(REPO / "examples" / "scifact-slice").training_query_ids()
    assert set(per_query) == set(train_queries)  # every train query, none worded as a test query
    assert min(per_query.values()) == 1 and max(per_query.values()) > 5
    default = CliRunner().invoke(app, [*args, "--sessions-per-query", "2"])
    assert default.exit_code == 0, default.output
    plain = [json.loads(line) for line in out.read_text().splitlines()]
    assert "popularity" not in plain[0]["search_meta"] and plain[0]["search_meta"]["click_model"] == PositionBasedClickModel().params()
    assert len(plain) == 2 * len(train_queries)
    assert "dwell" not in plain[0]["search_meta"] and all("meta" not in e for s in plain for e in s["events"])
    reported = CliRunner().invoke(app, [*args, "--dwell", "reported"])
    assert reported.exit_code == 0, reported.output
    with_dwell = [json.loads(line) for line in out.read_text().splitlines()]
    assert with_dwell[0]["search_meta"]["dwell"]["reported"] is True
    assert all(e["meta"]["dwell_seconds"] > 0 for s in with_dwell for e in s["events"]) and any(s["events"] for s in with_dwell)
    for bad in (["--click-model", "nope"], ["--click-model", "cascade", "--click-param", "gamma=1"], ["--popularity", "zipf", "--sessions-per-query", "3"],
                ["--dwell", "always"]):
        refused = CliRunner().invoke(app, [*args, *bad])
        assert refused.exit_code == 2, (bad, refused.output)


def test_training_queries_leave_out_test_queries_by_id_and_by_text():
    corpus = {f"d{i}": {"title": "", "text": f"doc {i}"} for i in range(3)}
    queries = {"q1": "Vitamin D and bones", "q2": "vitamin d  and BONES", "q3": "coffee", "q4": "tea"}
    data = BeirDataset(corpus=corpus, queries=queries, name="leak",
                       qrels_by_split={"train": {"q1": {"d0": 1}, "q3": {"d1": 1}, "q4": {"d2": 1}},
                                       "test": {"q2": {"d0": 1}, "q4": {"d2": 1}}})
    assert data.training_query_ids() == ["q3"]  # q1 shares q2's text, q4 is judged in test
