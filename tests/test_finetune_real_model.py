"""Fine-tune the real all-MiniLM-L6-v2 for a few steps on simulated SciFact clicks (small slice).

Sessions are simulated for SciFact **train** queries only (BM25 as the search engine, a
position-based click model). Sessions are split by query: the held-out queries never reach
training, and their nDCG@10 (clicked results ranked among everything shown in held-out sessions)
must go up, with the best weights kept and saved in a directory that loads back.
"""

from __future__ import annotations

import pytest

from finetuning.datasets.beir import BeirDataset
from finetuning.inputs import ItemsSet, TrainTestSplitter, sessions_to_inputs
from finetuning.models.registry import base_model_path, load_model
from finetuning.models.text import TextEmbeddingsModel
from finetuning.params import FineTuningParams, FineTuningSettings
from finetuning.simulation.click_simulator import simulate_sessions
from finetuning.tracking.in_memory import InMemoryTracker
from finetuning.train import fine_tune


@pytest.mark.slow
def test_minilm_learns_from_simulated_scifact_clicks(scifact_dir, tmp_path):
    dataset = BeirDataset.load(scifact_dir).subset(n_queries=200, split="train", extra_docs=150, seed=3)
    sessions = simulate_sessions(dataset, split="train", top_k=10, sessions_per_query=3, seed=0)
    train, held_out = TrainTestSplitter(test_size=0.2, random_state=0)(sessions_to_inputs(sessions))
    assert {s.query for s in train}.isdisjoint({s.query for s in held_out})

    model = TextEmbeddingsModel.from_pretrained(base_model_path("all-MiniLM-L6-v2"), max_seq_length=128)
    items = ItemsSet(dataset.doc_texts())
    params = FineTuningParams(query_lr=3e-5, items_lr=3e-5)
    # a test of learning, not of the keeper's burden of proof (tests/test_engine_fine_tuner.py): on 35
    # held-out queries a few steps do not prove a gain, so trained weights that are not worse are kept
    settings = FineTuningSettings(batch_size=16, num_epochs=1, test_each_n_sessions=0.5, seed=0, keep_candidate_z=-1.0)
    outcome = fine_tune(model, train, held_out, items, params, settings, InMemoryTracker(), accelerator="cpu")

    before, after = outcome.metrics_before["val_ndcg@10"], outcome.metrics_after["val_ndcg@10"]
    assert 0 < outcome.steps <= 20
    assert outcome.best_step and outcome.best_step > 0, (before, after)
    assert after > before, (before, after)

    reloaded = load_model(model.save(tmp_path / "tuned"))
    texts = ["a claim about cancer risk"]
    assert (reloaded.encode_queries(texts) - model.encode_queries(texts)).abs().max() < 1e-5
