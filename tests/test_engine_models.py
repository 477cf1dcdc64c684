"""Text model, registry, tiny model: save/load round trips, real freezing, kind dispatch."""

from __future__ import annotations

import json

import pytest
import torch

from finetuning.models.base import MODEL_CONFIG_FILE
from finetuning.models.registry import base_model_path, load_model, register_model_kind, resolve_kind
from finetuning.models.text import TextEmbeddingsModel


def test_tiny_model_round_trip(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    assert isinstance(model, TextEmbeddingsModel) and model.same_query_and_items
    before = model.encode_queries(["red cat", "music news"])
    assert before.shape == (2, 32)
    saved = model.save(tmp_path / "copy")
    assert json.loads((saved / MODEL_CONFIG_FILE).read_text())["kind"] == "text"
    again = load_model(saved)
    assert torch.allclose(before, again.encode_queries(["red cat", "music news"]), atol=1e-6)


def test_separate_towers_are_independent_and_survive_save(tiny_model_dir, tmp_path):
    model = TextEmbeddingsModel.from_pretrained(tiny_model_dir, same_query_and_items=False)
    assert not model.same_query_and_items
    assert model.items_model is not model.query_model
    with torch.no_grad():
        for parameter in model.items_model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    q, i = model.encode_queries(["red cat"]), model.encode_items(["red cat"])
    assert not torch.allclose(q, i)
    again = load_model(model.save(tmp_path / "two"))
    assert not again.same_query_and_items
    assert torch.allclose(again.encode_items(["red cat"]), i, atol=1e-6)
    assert torch.allclose(again.encode_queries(["red cat"]), q, atol=1e-6)


def test_fixing_layers_really_freezes(tiny_model_dir):
    model = TextEmbeddingsModel.from_pretrained(tiny_model_dir)
    total = len(list(model.get_query_model_params()))
    model.fix_query_model(1)
    hf = model.query_model.transformers_model
    assert all(not p.requires_grad for p in hf.embeddings.parameters())
    assert all(not p.requires_grad for p in hf.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in hf.encoder.layer[1].parameters())
    trainable = list(model.get_query_model_params())
    assert 0 < len(trainable) < total
    model.forward_query(["red cat"]).sum().backward()
    assert hf.encoder.layer[0].attention.self.query.weight.grad is None
    assert hf.encoder.layer[1].attention.self.query.weight.grad is not None
    model.unfix_query_model()
    assert len(list(model.get_query_model_params())) == total
    with pytest.raises(ValueError):
        model.fix_query_model(5)


def test_shared_tower_has_no_items_params(tiny_model_dir):
    model = TextEmbeddingsModel.from_pretrained(tiny_model_dir)
    assert list(model.get_items_model_params()) == []


def test_registry_dispatch_and_import_kinds(tiny_model_dir, tmp_path):
    assert resolve_kind("text") is TextEmbeddingsModel
    assert resolve_kind("finetuning.models.text:TextEmbeddingsModel") is TextEmbeddingsModel
    with pytest.raises(KeyError):
        resolve_kind("no-such-kind")
    register_model_kind("text-alias", TextEmbeddingsModel)
    assert resolve_kind("text-alias") is TextEmbeddingsModel
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path)


def test_base_model_path_resolves_shipped_minilm(tmp_path):
    path = base_model_path("all-MiniLM-L6-v2")
    assert (path / "modules.json").exists()
    assert base_model_path(tmp_path) == tmp_path
    with pytest.raises(KeyError):
        base_model_path("not-a-model-anywhere")


def test_tiny_clip_text_to_image_round_trip_and_freezing(tmp_path):
    import numpy as np
    from PIL import Image

    from finetuning.models.clip import ClipEmbeddingsModel
    from finetuning.models.tiny import build_tiny_clip_model

    model = load_model(build_tiny_clip_model(tmp_path / "clip"))
    assert isinstance(model, ClipEmbeddingsModel) and not model.same_query_and_items
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")) for _ in range(3)]
    items = model.encode_items(images)
    queries = model.encode_queries(["red cat", "a dog"])
    assert items.shape == (3, 32) and queries.shape == (2, 32)
    assert torch.allclose(items.norm(dim=-1), torch.ones(3), atol=1e-5)
    query_params = {id(p) for p in model.get_query_model_params()}
    assert query_params.isdisjoint({id(p) for p in model.get_items_model_params()})
    model.fix_item_model(1)
    assert all(not p.requires_grad for p in model.clip_model.vision_model.encoder.layers[0].parameters())
    assert {id(p) for p in model.get_query_model_params()} == query_params
    again = load_model(model.save(tmp_path / "saved"))
    assert torch.allclose(again.encode_items(images), items, atol=1e-5)
    assert torch.allclose(again.encode_queries(["red cat", "a dog"]), queries, atol=1e-5)
