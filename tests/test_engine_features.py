"""FeaturesExtractor, confidences, rankers and losses: the click → pair → loss path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from finetuning.confidences import PositionBiasConfidences, dummy_confidences
from finetuning.features_extractor import FeaturesExtractor, flatten_batch
from finetuning.inputs import FineTuningInput, ItemsSet
from finetuning.inputs.input import ClickEvent
from finetuning.losses import ClickInfoNCELoss, CosineProbMarginRankingLoss, ProbMarginRankingLoss
from finetuning.models.registry import load_model
from finetuning.rankers import cosine, score_matrix

ITEMS = ItemsSet({k: f"{k} red cat" for k in "abcdefgh"})


def _input(query, results, clicks, irrelevant=False, **kw):
    return FineTuningInput(
        query=query,
        results=list(results),
        events=[ClickEvent(object_id=c) for c in clicks],
        ranks={o: r + 1 for r, o in enumerate(results)},
        is_irrelevant=irrelevant,
        **kw,
    )


class CountingModel(torch.nn.Module):
    """Wraps a model and records every batch it embeds."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.item_calls: list[list] = []
        self.query_calls: list[list] = []

    def forward_query(self, queries):
        self.query_calls.append(list(queries))
        return self.inner.forward_query(queries)

    def forward_items(self, items):
        self.item_calls.append(list(items))
        return self.inner.forward_items(items)

    def get_embedding_dimension(self):
        return self.inner.get_embedding_dimension()


@pytest.fixture
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


def test_cosine_ranker_is_along_the_embedding_axis():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    i = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    assert torch.allclose(cosine(q, i), torch.tensor([1.0, 1 / math.sqrt(2)]))
    assert torch.allclose(score_matrix(cosine, q, i), F.normalize(q, dim=-1) @ F.normalize(i, dim=-1).T)


def test_pairs_cover_every_click_against_skips_above_the_last_click(model):
    extractor = FeaturesExtractor(model)
    # clicks at ranks 2 and 4: a and c were skipped above the last click, e/f below it
    item = _input("red", "abcdef", clicks=["b", "d"])
    features = extractor([item], ITEMS)
    pairs = {(features.item_ids[p], features.item_ids[n]) for p, n in zip(features.pair_positive_index.tolist(), features.pair_negative_index.tolist())}
    assert pairs == {("b", "a"), ("b", "c"), ("d", "a"), ("d", "c")}
    assert "e" not in features.item_ids and "f" not in features.item_ids
    assert features.positive_ranks.shape == features.negative_ranks.shape == (4,)
    assert torch.all(features.target == 1)
    # clicked items are not negatives of their own query
    weights = features.negative_weights[0]
    for object_id in ("b", "d"):
        assert weights[features.item_ids.index(object_id)] == 0


def test_unexamined_results_of_a_query_are_masked_as_in_batch_negatives(model):
    extractor = FeaturesExtractor(model)
    one = _input("red", "abc", clicks=["a"])  # b, c below the last click: never negatives of "red"
    two = _input("blue", "bcd", clicks=["c", "d"])  # b above the last click: a hard negative of "blue"
    features = extractor([one, two], ITEMS)
    red = features.query_texts.index("red")
    assert features.negative_weights[red, features.item_ids.index("b")] == 0
    assert features.negative_weights[red, features.item_ids.index("c")] == 0
    blue = features.query_texts.index("blue")
    assert features.negative_weights[blue, features.item_ids.index("a")] == 1  # an in-batch negative


def test_items_and_queries_are_embedded_once_per_batch(model):
    counting = CountingModel(model)
    extractor = FeaturesExtractor(counting)
    batch = [_input("red", "abcd", clicks=["c"]), _input("red", "abce", clicks=["c"]), _input("blue", "bcd", clicks=["d"])]
    features = extractor(batch, ITEMS)
    assert len(counting.item_calls) == 1 and len(counting.query_calls) == 1
    assert len(counting.item_calls[0]) == len(set(counting.item_calls[0])) == len(features.item_ids)
    assert sorted(counting.query_calls[0]) == ["blue", "red"]  # two sessions of "red" pooled


def test_downsampling_keeps_whole_item_groups(model):
    extractor = FeaturesExtractor(model, negative_downsampling_factor=0.5, seed=1)
    parts = {"a#0": "a", "a#1": "a", "b#0": "b", "b#1": "b", "c#0": "c", "d#0": "d"}
    item = _input("red", ["a#0", "a#1", "b#0", "b#1", "c#0", "d#0"], clicks=["d#0"], part_to_object_id=parts)
    extractor.train()
    kept = extractor._downsample_not_events(item)
    groups = {parts[k] for k in kept}
    assert len(groups) == 2  # half of the 3 skipped objects above the click, rounded
    for group in groups:
        assert {k for k in kept if parts[k] == group} == {k for k, v in parts.items() if v == group}
    extractor.eval()
    assert len(extractor._downsample_not_events(item)) == 5  # no downsampling in eval


def test_irrelevant_sessions_are_ignored_or_all_negative(model):
    irrelevant = _input("red", "ab", clicks=[], irrelevant=True)
    positive = _input("red", "cd", clicks=["c"])
    ignored = FeaturesExtractor(model, not_irrelevant_only=True)(flatten_batch((positive, irrelevant)), ITEMS)
    assert "a" not in ignored.item_ids
    used = FeaturesExtractor(model, not_irrelevant_only=False)((positive, irrelevant), ITEMS)
    assert {"a", "b"} <= set(used.item_ids)
    assert used.negative_weights[0, used.item_ids.index("a")] == 1.0
    assert len(used) == 2  # (c, a), (c, b)


def test_position_bias_confidences_up_weight_deep_clicks():
    sessions = [_input(f"q{i}", "abcdef", clicks=["a"] if i % 2 else ["a", "c"]) for i in range(40)]
    sessions += [_input("deep", "abcdef", clicks=["f"])]
    calculator = PositionBiasConfidences(prior_strength=1.0, max_click_weight=5.0).fit(sessions)
    theta = calculator.examination
    assert theta[0] == 1.0 and all(a >= b for a, b in zip(theta, theta[1:]))
    weights = calculator([sessions[-1]])[0]
    assert weights["f"] > 1.0  # a click at a rarely examined rank is strong evidence
    assert weights["b"] < 1.0 and weights["a"] == 1.0  # skips weigh their examination probability
    assert dummy_confidences([sessions[-1]]) == [{k: 1.0 for k in "abcdef"}]
    capped = PositionBiasConfidences(prior_strength=1.0, max_click_weight=1.0).fit(sessions)([sessions[-1]])[0]
    assert capped["f"] == 1.0 and capped["b"] == weights["b"]  # the cap bounds a click's weight


def test_click_weights_are_pooled_per_query_into_a_relevance_estimate(model):
    """IPS click weights averaged over a query's sessions and clipped to 1: a deep result clicked
    each time it was probably looked at counts fully, a stray click among many sessions little."""
    calculator = PositionBiasConfidences(max_click_weight=10.0)
    calculator.examination = [1.0, 0.5, 0.25, 0.2] + [0.1] * 96
    # 'd' (rank 4, examined 1 time in 5) is clicked in 2 of 10 sessions: relevance 2/10 * 5 = 1
    # 'b' (rank 2, examined 1 time in 2) is clicked once in 10 sessions: 1/10 * 2 = 0.2
    sessions = [_input("red", "abcd", clicks=["a", "d"] if i < 2 else (["a", "b"] if i == 2 else ["a"])) for i in range(10)]
    features = FeaturesExtractor(model, confidence_calculator=calculator)(sessions, ITEMS)
    weights = {features.item_ids[int(i)]: float(w) for i, w in zip(features.positive_item_index, features.positive_weights)}
    assert weights == pytest.approx({"a": 1.0, "d": 1.0, "b": 0.2})
    one_session = FeaturesExtractor(model, confidence_calculator=calculator)([sessions[2]], ITEMS)
    assert float(one_session.positive_weights.max()) == 1.0  # a single 2x click is clipped, not amplified


def _features(model, confidence_calculator=dummy_confidences):
    extractor = FeaturesExtractor(model, confidence_calculator=confidence_calculator)
    return extractor([_input("red", "abcd", clicks=["c"]), _input("blue", "bcdef", clicks=["e"])], ITEMS)


def test_prob_margin_loss_matches_its_formula(model):
    features = _features(model)
    loss = ProbMarginRankingLoss(base_margin=0.3)(features)
    expected = torch.relu(0.3 - (features.positive_ranks - features.negative_ranks)).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert any(p.grad is not None for p in model.parameters())


def test_cosine_prob_margin_really_applies_its_adjustment(model):
    features = _features(model)
    plain = ProbMarginRankingLoss(base_margin=0.3)(features)
    adjusted = CosineProbMarginRankingLoss(base_margin=0.3)(features)
    gap = (features.positive_ranks - features.negative_ranks) / 2
    assert torch.allclose(adjusted, torch.relu(0.3 - gap).mean())
    assert not torch.allclose(plain, adjusted)


def test_click_infonce_matches_a_manual_softmax(model):
    features = _features(model)
    loss = ClickInfoNCELoss(temperature=0.1)(features)
    q = F.normalize(features.query_embeddings, dim=-1)
    i = F.normalize(features.item_embeddings, dim=-1)
    total = 0.0
    for qi, pi in zip(features.positive_query_index.tolist(), features.positive_item_index.tolist()):
        scores = (q[qi] @ i.T) / 0.1
        weights = features.negative_weights[qi].clone()
        weights[pi] = 1.0
        allowed = weights > 0
        denominator = torch.logsumexp(scores[allowed] + torch.log(weights[allowed]), dim=0)
        total = total + (denominator - scores[pi])
    assert torch.allclose(loss, total / features.positive_item_index.numel(), atol=1e-5)


def test_losses_survive_a_batch_without_clicks(model):
    features = FeaturesExtractor(model)([_input("red", "ab", clicks=[])], ITEMS)
    assert features.is_empty and len(features) == 0
    for loss in (ClickInfoNCELoss(), ProbMarginRankingLoss(), CosineProbMarginRankingLoss()):
        assert float(loss(features)) == 0.0


def test_false_negative_margin_drops_only_other_queries_items_scored_near_the_positive(model):
    extractor = FeaturesExtractor(model)
    features = extractor([_input("red", "abc", clicks=["b"]), _input("blue", "de", clicks=["e"])], ITEMS)
    red = features.query_texts.index("red")
    assert features.shown_mask[red].tolist() == [i in "abc" for i in features.item_ids]
    cosines = F.normalize(features.query_embeddings, dim=-1) @ F.normalize(features.item_embeddings, dim=-1).T
    # a margin of 2 covers every cosine: each query keeps only its own results as negatives
    filtered = ClickInfoNCELoss(temperature=0.1, false_negative_margin=2.0)(features)
    total = 0.0
    for qi, pi in zip(features.positive_query_index.tolist(), features.positive_item_index.tolist()):
        weights = features.negative_weights[qi].clone()
        weights[~features.shown_mask[qi]] = 0.0
        weights[pi] = 1.0
        allowed = weights > 0
        scores = cosines[qi] / 0.1
        total = total + torch.logsumexp(scores[allowed] + torch.log(weights[allowed]), dim=0) - scores[pi]
    assert torch.allclose(filtered, total / features.positive_item_index.numel(), atol=1e-5)
    # without the margin, the other query's items stay in the denominator
    assert ClickInfoNCELoss(temperature=0.1)(features) > filtered
