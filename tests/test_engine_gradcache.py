"""Gradient caching and the validation embeddings cache, on tiny random models.

- the gradient-cached step (mini-batches without autograd, loss on the cached embeddings,
  re-embedding with the cached gradients) gives the one-shot forward's loss and parameter
  gradients, for every loss and for shared and separate towers;
- dropout is replayed: re-embedding a mini-batch under its recorded RNG state gives its cached rows;
- activation memory of a step (bytes autograd keeps for backward, at their peak) stays flat as
  the number of shown results per query grows, while the one-shot forward's grows with it;
- validation embeds each distinct text once per set of weights and nothing again until they change.
"""

from __future__ import annotations

import pytest
import torch

from finetuning.embedding_cache import EmbeddingsCache
from finetuning.features_extractor import FeaturesExtractor
from finetuning.fine_tuner import EmbeddingsFineTuner
from finetuning.grad_cache import RandContext, embed, mini_batches
from finetuning.inputs import ClickEvent, FineTuningInput, ItemsSet, TextQueryRetriever, sessions_to_inputs
from finetuning.losses import ClickInfoNCELoss, CosineProbMarginRankingLoss, ProbMarginRankingLoss
from finetuning.metrics.held_out import HeldOutRetrievalMetrics
from finetuning.models.registry import load_model
from finetuning.params import FineTuningParams
from finetuning.tracking.in_memory import InMemoryTracker
from tests.fixtures.engine import TOPICS, synthetic_world

LOSSES = {
    "click_infonce": lambda: ClickInfoNCELoss(temperature=0.05),
    "prob_margin": lambda: ProbMarginRankingLoss(base_margin=0.3),
    "cosine_prob_margin": lambda: CosineProbMarginRankingLoss(base_margin=0.3),
}


def _step(model, inputs, items, loss_func, mini_batch_size: int) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and parameter gradients of one training step's backward."""
    model.zero_grad(set_to_none=True)
    extractor = FeaturesExtractor(model, mini_batch_size=mini_batch_size)
    features = extractor(inputs, items)
    loss = loss_func(features)
    loss.backward()
    features.backward_through_towers()
    return float(loss.detach()), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("towers", ["shared", "separate"])
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_cached_step_equals_the_one_shot_forward(tiny_model_dir, tiny_two_tower_dir, towers, loss_name):
    model = load_model(tiny_model_dir if towers == "shared" else tiny_two_tower_dir)
    model.eval()  # no dropout: the one-shot and the cached pass see different mini-batches
    items, sessions = synthetic_world(n_items=60, n_sessions=40, shown=8, seed=3)
    inputs = sessions_to_inputs(sessions)
    items_set = ItemsSet(items)

    one_shot_loss, one_shot = _step(model, inputs, items_set, LOSSES[loss_name](), mini_batch_size=10_000)
    features = FeaturesExtractor(model, mini_batch_size=3)(inputs, items_set)
    assert len(features.cached) == 2  # queries and items both went through the cache
    assert features.item_embeddings.shape[0] > 3 * 3
    cached_loss, cached = _step(model, inputs, items_set, LOSSES[loss_name](), mini_batch_size=3)

    assert one_shot_loss > 0
    assert cached_loss == pytest.approx(one_shot_loss, rel=1e-5)
    assert set(cached) == set(one_shot)
    towers_with_grad = {name.split(".")[0] for name in one_shot}
    assert towers_with_grad == ({"query_model"} if towers == "shared" else {"query_model", "_items_model"})
    for name, reference in one_shot.items():
        error = (cached[name] - reference).norm()
        assert error <= 1e-5 * reference.norm() + 1e-9, (name, float(error), float(reference.norm()))


def test_dropout_is_replayed_when_re_embedding(tiny_model_dir):
    model = load_model(tiny_model_dir)
    model.train()  # dropout on
    texts = [f"{a} {b} {c}" for a, b, c in zip(TOPICS, reversed(TOPICS), TOPICS[3:] + TOPICS[:3])]
    torch.manual_seed(0)
    leaf, cache = embed(model.forward_items, texts, mini_batch_size=4)
    assert cache is not None and leaf.requires_grad and len(cache.chunks) == 4
    after = torch.get_rng_state()
    for chunk, rng in zip(cache.chunks, cache.rng):
        with rng:
            again = model.forward_items([texts[i] for i in chunk])
        torch.testing.assert_close(again.detach(), leaf.detach()[chunk], rtol=0, atol=0)
        without = model.forward_items([texts[i] for i in chunk])  # fresh dropout masks differ
        assert not torch.equal(without.detach(), leaf.detach()[chunk])
    torch.set_rng_state(after)
    with RandContext():
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), after)  # a replay leaves the surrounding RNG alone


def test_mini_batches_keep_every_index_once_and_group_by_length():
    texts = ["a" * n for n in (9, 1, 5, 3, 7, 2, 8)]
    chunks = mini_batches(texts, 3)
    assert sorted(i for c in chunks for i in c) == list(range(len(texts)))
    assert all(len(c) <= 3 for c in chunks)
    lengths = [len(texts[i]) for c in chunks for i in c]
    assert lengths == sorted(lengths)


class SavedActivations:
    """Bytes autograd holds for backward (saved tensors), live and at their peak."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    def pack(self, tensor: torch.Tensor):
        meter = self
        size = tensor.numel() * tensor.element_size()

        class Held:
            def __init__(self) -> None:
                self.tensor = tensor
                meter.live += size
                meter.peak = max(meter.peak, meter.live)

            def __del__(self) -> None:
                meter.live -= size

        return Held()

    @staticmethod
    def unpack(held) -> torch.Tensor:
        return held.tensor


def _shown_world(queries: int, shown: int) -> tuple[list[FineTuningInput], ItemsSet]:
    """Each query shows ``shown`` results and its last result is clicked, so every other one is a
    hard negative (all of them embedded); every item text has the same length (40 words, so that
    a text's activations outweigh its embedding's share of the loss graph, as with real models)."""
    inputs, items = [], {}
    for q in range(queries):
        results = [f"q{q}d{j}" for j in range(shown)]
        for j, object_id in enumerate(results):
            items[object_id] = " ".join(TOPICS[(q + j + k) % len(TOPICS)] for k in range(40))
        inputs.append(FineTuningInput(session_id=f"s{q}", query=TOPICS[q], results=results,
                                      events=[ClickEvent(object_id=results[-1])],
                                      ranks={o: j + 1 for j, o in enumerate(results)}))
    return inputs, ItemsSet(items)


def _peak_saved_bytes(model, inputs, items, mini_batch_size: int) -> int:
    meter = SavedActivations()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        _step(model, inputs, items, ClickInfoNCELoss(), mini_batch_size)
    return meter.peak


def test_step_activation_memory_is_flat_as_shown_results_grow(tiny_model_dir):
    model = load_model(tiny_model_dir)
    model.eval()
    cached, one_shot = {}, {}
    for shown in (4, 32):  # 16 and 128 items embedded for 4 queries
        inputs, items = _shown_world(queries=4, shown=shown)
        cached[shown] = _peak_saved_bytes(model, inputs, items, mini_batch_size=8)
        one_shot[shown] = _peak_saved_bytes(model, inputs, items, mini_batch_size=10_000)
    assert one_shot[32] > 6 * one_shot[4]  # the measure sees the one-shot step grow with the items ...
    # ... while the cached step keeps one mini-batch of tower activations; what still grows is the
    # loss over the embeddings themselves (a few floats per item and pair, not per token)
    assert cached[32] <= 1.3 * cached[4]
    assert cached[32] - cached[4] < (one_shot[32] - one_shot[4]) / 20


def test_validation_embeds_each_text_once_per_weights(tiny_model_dir):
    model = load_model(tiny_model_dir)
    items, sessions = synthetic_world(n_items=60, n_sessions=60, seed=5)
    inputs = sessions_to_inputs(sessions)
    metric = HeldOutRetrievalMetrics()
    tuner = EmbeddingsFineTuner(model, ItemsSet(items), TextQueryRetriever(), ClickInfoNCELoss(), FineTuningParams(),
                                InMemoryTracker(), metric_calculators=[metric])
    calls = {"items": 0}
    forward_items = model.forward_items

    def counting(values):
        calls["items"] += len(values)
        return forward_items(values)

    model.forward_items = counting
    before = tuner.evaluate(inputs, batch_size=8)  # 8 validation batches, each with features and a loss
    shown = {o for i in inputs for o in i.results}
    queries = {i.query for i in inputs if i.clicked_ids}
    assert before["val_ndcg@10"] > 0
    assert calls["items"] == len(shown)  # every distinct shown item embedded once, features and pool alike
    assert tuner.embeddings_cache.computed == len(shown) + len(queries)

    again = tuner.evaluate(inputs, batch_size=8)
    assert calls["items"] == len(shown)  # unchanged weights: nothing re-embedded
    assert again == before

    with torch.no_grad():  # the weights change (as after an optimizer step): embeddings are renewed
        next(iter(model.parameters())).mul_(1.01)
    tuner.evaluate(inputs, batch_size=8)
    assert calls["items"] == 2 * len(shown)


def test_embeddings_cache_rows_match_direct_encoding(tiny_model_dir):
    model = load_model(tiny_model_dir)
    items, _ = synthetic_world(n_items=20)
    cache = EmbeddingsCache(model, batch_size=4)
    ids = ["d3", "d1", "d3", "d7"]
    rows = cache.items(ids, ItemsSet(items))
    torch.testing.assert_close(rows, model.encode_items([items[i] for i in ids]), rtol=1e-5, atol=1e-6)
    assert cache.computed == 3
    torch.testing.assert_close(cache.queries(["red", "cat"]), model.encode_queries(["red", "cat"]), rtol=1e-5, atol=1e-6)


def test_embeddings_cache_is_full_precision_inside_autocast(tiny_model_dir):
    """Validation inside a bf16-mixed run scores with float32 embeddings, as the start was scored."""
    model = load_model(tiny_model_dir)
    model.eval()
    items, _ = synthetic_world(n_items=12)
    ids = sorted(items)
    reference = model.encode_items([items[i] for i in ids])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direct = model.encode_items([items[i] for i in ids]).float()  # bf16 matmuls: other numbers
        rows = EmbeddingsCache(model).items(ids, ItemsSet(items))
    assert rows.dtype == torch.float32
    torch.testing.assert_close(rows, reference, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(direct, reference, rtol=1e-5, atol=1e-6)


def test_cached_step_runs_under_mixed_precision(tiny_model_dir):
    """AMP (``settings.precision`` such as ``bf16-mixed`` runs the step under autocast): the cached
    embeddings stay float32, the re-embedded mini-batches get their gradients in their own dtype."""
    model = load_model(tiny_model_dir)
    model.eval()
    items, sessions = synthetic_world(n_items=40, n_sessions=20, seed=4)
    inputs, items_set = sessions_to_inputs(sessions), ItemsSet(items)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        one_shot_loss, one_shot = _step(model, inputs, items_set, ClickInfoNCELoss(), mini_batch_size=10_000)
        cached_loss, cached = _step(model, inputs, items_set, ClickInfoNCELoss(), mini_batch_size=4)
    assert cached_loss == pytest.approx(one_shot_loss, rel=0.05)
    assert set(cached) == set(one_shot)
    assert all(torch.isfinite(g).all() and g.dtype == torch.float32 for g in cached.values())
    total = torch.cat([g.flatten() for g in cached.values()])
    reference = torch.cat([one_shot[name].flatten() for name in cached])
    assert torch.nn.functional.cosine_similarity(total, reference, dim=0) > 0.95
