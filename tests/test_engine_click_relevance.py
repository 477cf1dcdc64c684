"""ClickRelevanceModel: P(relevant) from a result's clicks and skips, fitted by EM; its use as the
extractor's weights and as the held-out grade."""

from __future__ import annotations

import numpy as np
import pytest

from finetuning.click_relevance import ClickRelevanceModel
from finetuning.features_extractor import FeaturesExtractor
from finetuning.inputs import FineTuningInput, ItemsSet, TextQueryRetriever
from finetuning.inputs.input import ClickEvent
from finetuning.metrics.base import MetricContext
from finetuning.metrics.held_out import evaluate_sessions_per_query, held_out_grades
from finetuning.models.registry import load_model
from finetuning.rankers import cosine
from finetuning.resolve import confidence_calculator
from finetuning.simulation.click_model import PositionBasedClickModel
from finetuning.simulation.trust_bias import TrustBiasClickModel

ITEMS = ItemsSet({f"d{k}": f"document {k} about cats" for k in range(10)})


def _session(query, results, clicks):
    return FineTuningInput(query=query, results=list(results), events=[ClickEvent(object_id=c) for c in clicks],
                           ranks={o: r + 1 for r, o in enumerate(results)}, is_irrelevant=not clicks)


def simulated_sessions(n_queries=300, sessions_per_query=10, seed=0, clicks=None):
    """Clicks of ``clicks`` (default PBM: examination 1/rank, 0.9 relevant / 0.05 noise); relevance is
    likelier near the top."""
    rng = np.random.default_rng(seed)
    clicks = clicks or PositionBasedClickModel(seed=seed)
    sessions, truth = [], {}
    for q in range(n_queries):
        results = [f"q{q}d{r}" for r in range(10)]
        relevant = [bool(rng.random() < 0.5 / (r + 1)) for r in range(10)]
        truth.update({(f"q{q}", o): rel for o, rel in zip(results, relevant)})
        for _ in range(sessions_per_query):
            clicked = [o for o, c in zip(results, clicks.clicks(relevant, rng)) if c]
            sessions.append(_session(f"q{q}", results, clicked))
    return sessions, truth


def test_em_recovers_the_click_rates_and_separates_relevant_clicks_from_noise():
    sessions, truth = simulated_sessions()
    model = ClickRelevanceModel().fit(sessions)
    assert model.relevant_click == pytest.approx(0.9, abs=0.08)
    assert model.noise_click == pytest.approx(0.05, abs=0.02)
    assert model.priors[0] > model.priors[5]  # relevance falls with rank

    by_query: dict[str, list] = {}
    for s in sessions:
        by_query.setdefault(s.query, []).append(s)
    relevant_weight = noise_weight = ips_noise_weight = ips_relevant_weight = 0.0
    theta = model.examination
    for query, group in by_query.items():
        posterior = model.relevance(group)
        clicked = {c for s in group for c in s.clicked_ids}
        for o in clicked:
            ips = min(1.0, sum(1 / theta[s.rank(o) - 1] for s in group if o in s.clicked_ids) / len(group))
            if truth[(query, o)]:
                relevant_weight += posterior[o]
                ips_relevant_weight += ips
            else:
                noise_weight += posterior[o]
                ips_noise_weight += ips
    share = noise_weight / (noise_weight + relevant_weight)
    ips_share = ips_noise_weight / (ips_noise_weight + ips_relevant_weight)
    assert share < 0.6 * ips_share  # noise clicks weigh far less than under pooled inverse propensity
    assert relevant_weight > 0.8 * ips_relevant_weight  # while relevant clicks keep most of theirs


def _noise_share_and_relevant_weight(model, sessions, truth):
    """(share of the clicked results' P(relevant) that falls on irrelevant ones, mean P(relevant) of relevant clicks)."""
    by_query: dict[str, list] = {}
    for s in sessions:
        by_query.setdefault(s.query, []).append(s)
    noise = relevant = 0.0
    relevant_clicks = 0
    for query, group in by_query.items():
        posterior = model.relevance(group)
        for s in group:
            for o in s.clicked_ids:
                if truth[(query, o)]:
                    relevant += posterior[o]
                    relevant_clicks += 1
                else:
                    noise += posterior[o]
    return noise / (noise + relevant), relevant / relevant_clicks


def test_per_rank_click_rates_doubt_trusted_top_clicks_and_change_little_under_pbm():
    trust, trust_truth = simulated_sessions(clicks=TrustBiasClickModel(seed=0))
    pooled = _noise_share_and_relevant_weight(ClickRelevanceModel().fit(trust), trust, trust_truth)
    model = ClickRelevanceModel(rank_rate_strength=20).fit(trust)
    by_rank = _noise_share_and_relevant_weight(model, trust, trust_truth)
    # an irrelevant result at rank 1 is clicked in 65 % of sessions: one pooled noise rate calls it relevant
    assert pooled[0] > 0.3
    assert by_rank[0] < 0.5 * pooled[0]
    assert by_rank[1] > 0.8
    relevant_rates, noise_rates = model.rank_click_rates
    assert noise_rates[0] == pytest.approx(0.65, abs=0.1) and noise_rates[0] > 3 * noise_rates[4]
    assert relevant_rates[0] == pytest.approx(0.98, abs=0.05)

    pbm, pbm_truth = simulated_sessions()
    pooled = _noise_share_and_relevant_weight(ClickRelevanceModel().fit(pbm), pbm, pbm_truth)
    by_rank = _noise_share_and_relevant_weight(ClickRelevanceModel(rank_rate_strength=20).fit(pbm), pbm, pbm_truth)
    assert by_rank[0] < pooled[0] + 0.03 and by_rank[1] > pooled[1] - 0.03


def _fixed_model(priors):
    """A click model with set parameters (no fit): examination 1/rank, 0.9 relevant / 0.05 noise clicks."""
    model = ClickRelevanceModel()
    model.examination = [1.0 / r for r in range(1, 101)]
    model.priors = priors
    model.relevant_click, model.noise_click = 0.9, 0.05
    return model


def test_a_stray_deep_click_is_doubted_and_a_repeated_top_click_trusted():
    model = _fixed_model([0.5, 0.2, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03, 0.03, 0.03] + [0.03] * 90)
    results = [f"d{k}" for k in range(10)]
    sessions = [_session("cats", results, ["d0"] if i < 9 else ["d0", "d9"]) for i in range(10)]
    posterior = model.relevance(sessions)
    assert posterior["d0"] > 0.99
    assert posterior["d9"] < 0.5  # one click at rank 10 in ten sessions: likelier noise than not
    assert posterior["d1"] < 0.05  # skipped in ten sessions at rank 2
    per_session = model(sessions)
    assert per_session[9]["d9"] == pytest.approx(posterior["d9"])  # a click: P(relevant)
    assert per_session[0]["d1"] == pytest.approx(1 - posterior["d1"])  # a skip: P(not relevant)


def test_the_extractor_weighs_positives_and_negatives_by_the_posterior(tiny_model_dir):
    model = _fixed_model([0.3] * 100)
    results = [f"d{k}" for k in range(5)]
    # d2 clicked in 3 of 4 sessions; d4 once (noise-like); d0, d1 skipped above the clicks
    sessions = [_session("cats", results, ["d2"]), _session("cats", results, ["d2"]),
                _session("cats", results, ["d2", "d4"]), _session("cats", results, [])]
    extractor = FeaturesExtractor(load_model(tiny_model_dir), confidence_calculator=model)
    features = extractor(sessions, ITEMS)
    posterior = model.relevance(sessions)  # the no-click session counts as evidence too
    weights = {features.item_ids[int(i)]: float(w) for i, w in zip(features.positive_item_index, features.positive_weights)}
    assert weights == pytest.approx({"d2": posterior["d2"], "d4": posterior["d4"]})
    assert weights["d2"] > 0.9 > weights["d4"]
    for o in ("d0", "d1", "d3"):  # shown above the last click (d4 at rank 5), never clicked
        assert float(features.negative_weights[0, features.item_ids.index(o)]) == pytest.approx(1 - posterior[o])


def test_held_out_grades_clicks_by_the_posterior_and_drops_noise_only_queries(tiny_model_dir):
    model = _fixed_model([0.5] + [0.03] * 99)
    results = [f"d{k}" for k in range(10)]
    sessions = [_session("cats", results, ["d0"]) for _ in range(5)]
    sessions += [_session("dogs", results[::-1], ["d0"] if i == 0 else []) for i in range(10)]  # d0 at rank 10, once
    context = MetricContext(load_model(tiny_model_dir), ITEMS, TextQueryRetriever(), cosine, model)
    per_query = evaluate_sessions_per_query(sessions, context, ks=(10,))
    assert len(per_query["ndcg@10"]) == 1  # "dogs" has only a doubtful click: not a judge of ranking


def test_all_shown_grading_credits_relevant_results_the_users_did_not_reach(tiny_model_dir):
    model = _fixed_model([0.5] * 100)
    results = [f"d{k}" for k in range(10)]
    sessions = [_session("cats", results, ["d0"]) for _ in range(5)]
    context = MetricContext(load_model(tiny_model_dir), ITEMS, TextQueryRetriever(), cosine, model)
    assert held_out_grades(sessions, context) == {"cats": pytest.approx({"d0": model.relevance(sessions)["d0"]})}
    grades = held_out_grades(sessions, context, grade_all_shown=True)["cats"]
    assert grades["d0"] > 0.99 and set(grades) == set(results)
    # rank 10, rarely examined: as likely relevant as not after five skips; rank 2, skipped five times: doubted
    assert grades["d9"] > 0.3 and grades["d1"] < 0.1 and grades["d1"] < grades["d5"] < grades["d9"]
    # the start model's order in the prior: a falling prior by rank marks its deep results down,
    # the overall prior does not
    model.priors, model.prior = [0.5, 0.4, 0.3, 0.2, 0.1] + [0.05] * 95, 0.3
    by_rank = held_out_grades(sessions, context, grade_all_shown=True)["cats"]
    flat = held_out_grades(sessions, context, grade_all_shown=True, prior_by_rank=False)["cats"]
    assert flat["d9"] > 2 * by_rank["d9"] and flat["d1"] < by_rank["d1"]


def test_click_relevance_is_a_settings_name():
    assert isinstance(confidence_calculator("click_relevance"), ClickRelevanceModel)
    assert confidence_calculator("click_relevance").rank_rate_strength is None
    assert confidence_calculator("click_relevance_by_rank").rank_rate_strength == 20.0
    with pytest.raises(ValueError):
        ClickRelevanceModel(relevant_click=0.05, noise_click=0.1)


def test_query_augmentation_does_not_split_a_query_s_evidence(tiny_model_dir):
    model = ClickRelevanceModel()
    results = [f"d{k}" for k in range(5)]
    sessions = [_session("cats", results, ["d2"]) for _ in range(3)]
    retriever = TextQueryRetriever(augment=lambda text, rng: f"{text} {rng.random():.6f}")
    retriever.training = True  # every call gives another text
    extractor = FeaturesExtractor(load_model(tiny_model_dir), confidence_calculator=model, query_retriever=retriever)
    features = extractor(sessions, ITEMS)
    posterior = model.relevance(sessions)
    weights = [float(w) for w in features.positive_weights]
    assert len(weights) == 3  # each session got its own augmented text, hence its own query row
    assert weights == pytest.approx([posterior["d2"]] * 3)  # but all three sessions' evidence


def _sessions_with_misleading_snippets(n_queries=300, sessions_per_query=10, seed=0, dwell=True, misleading_share=0.1,
                                       dwell_medians=(60.0, 12.0)):
    """PBM clicks (examination 1/rank; 0.9 relevant, 0.05 noise), where ``misleading_share`` of the
    irrelevant results have misleading snippets clicked like relevant ones; every click's dwell is
    reported (log-normal, medians ``dwell_medians`` s relevant and not: finetuning.simulation.dwell),
    or left unknown."""
    from finetuning.simulation import DwellTimeModel

    rng, stay = np.random.default_rng(seed), DwellTimeModel(*dwell_medians)
    sessions, truth = [], {}
    for q in range(n_queries):
        results = [f"q{q}d{r}" for r in range(10)]
        relevant = [bool(rng.random() < 0.5 / (r + 1)) for r in range(10)]
        misleading = [not rel and bool(rng.random() < misleading_share) for rel in relevant]
        truth.update({(f"q{q}", o): rel for o, rel in zip(results, relevant)})
        for _ in range(sessions_per_query):
            events = [ClickEvent(object_id=o, dwell_seconds=stay.dwell(rel, rng) if dwell else None)
                      for r, (o, rel, mis) in enumerate(zip(results, relevant, misleading))
                      if rng.random() < (0.9 if rel or mis else 0.05) / (r + 1)]
            sessions.append(FineTuningInput(query=f"q{q}", results=results, events=events,
                                            ranks={o: r + 1 for r, o in enumerate(results)}, is_irrelevant=not events))
    return sessions, truth


def test_dwell_tells_misleading_snippets_from_relevant_results():
    sessions, truth = _sessions_with_misleading_snippets()
    clicks_only = _noise_share_and_relevant_weight(ClickRelevanceModel(satisfied_dwell_seconds=None).fit(sessions), sessions, truth)
    model = ClickRelevanceModel().fit(sessions)
    with_dwell = _noise_share_and_relevant_weight(model, sessions, truth)
    # a misleading result is clicked as often as a relevant one: clicks alone call it relevant
    assert clicks_only[0] > 0.2
    assert with_dwell[0] < 0.5 * clicks_only[0]
    assert with_dwell[1] > 0.85
    quick_relevant, quick_not = model.quick_return  # P(back within 30 s | click): 0.24 and 0.82 in truth
    assert quick_relevant == pytest.approx(0.24, abs=0.08) and quick_not == pytest.approx(0.82, abs=0.08)
    assert model.misleading_click > 5 * model.noise_click and 0.02 < model.misleading_share < 0.3


def test_without_telling_dwell_the_model_is_the_clicks_only_model():
    sessions, _ = _sessions_with_misleading_snippets(n_queries=100, dwell=False)
    clicks_only = ClickRelevanceModel(satisfied_dwell_seconds=None).fit(sessions)
    assert ClickRelevanceModel().fit(sessions).params() == clicks_only.params()  # no dwell observed
    # every visit a quick one (as when clicks are logged seconds apart): dwell separates nothing
    for item in sessions:
        for event in item.events:
            event.dwell_seconds = 5.0
    model = ClickRelevanceModel().fit(sessions)
    assert model.misleading_share == 0.0 and model.quick_return[0] == model.quick_return[1]
    group = [s for s in sessions if s.query == "q3"]
    assert model.relevance(group) == pytest.approx(clicks_only.relevance(group), abs=1e-3)


def test_refitting_on_a_log_without_dwell_forgets_the_misleading_class():
    with_dwell, _ = _sessions_with_misleading_snippets(n_queries=100)
    without, _ = _sessions_with_misleading_snippets(n_queries=100, dwell=False)
    model = ClickRelevanceModel().fit(with_dwell)
    assert model.misleading_share > 0
    model.fit(without)
    assert model.misleading_share == 0.0
    group = [s for s in without if s.query == "q5"]
    assert model.relevance(group) == pytest.approx(ClickRelevanceModel().fit(without).relevance(group), abs=1e-4)


def test_weakly_separating_dwell_on_a_log_without_misleading_snippets_adds_no_misleading_class():
    # medians 30 s and 24 s: half the relevant and 59 % of the irrelevant clicks are quick returns
    sessions, truth = _sessions_with_misleading_snippets(misleading_share=0.0, dwell_medians=(30.0, 24.0))
    clicks_only = _noise_share_and_relevant_weight(ClickRelevanceModel(satisfied_dwell_seconds=None).fit(sessions), sessions, truth)
    model = ClickRelevanceModel().fit(sessions)
    assert model.misleading_share == 0.0  # the third class does not earn its parameters (BIC)
    assert model.quick_return[1] > model.quick_return[0]  # dwell still weighs the two classes
    noise, relevant_weight = _noise_share_and_relevant_weight(model, sessions, truth)
    assert relevant_weight > clicks_only[1] - 0.01 and noise < clicks_only[0] + 0.01
