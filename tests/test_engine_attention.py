"""Recomputed attention (finetuning.models.attention) on tiny random BERT models in train mode:

- losses and gradients are the same as with the models' own SDPA attention (same dropout masks),
  for shared and separate towers, with texts of different lengths (padding masked);
- autograd keeps fewer bytes for the backward pass (the probability matrices are not kept);
- after the block the models are back on SDPA, and a saved model names no custom attention.
"""

from __future__ import annotations

import torch

from finetuning.models.attention import NAME, NO_DROPOUT_NAME, attention_without_dropout, recomputed_attention, training_attention
from finetuning.models.registry import load_model
from tests.fixtures.engine import TOPICS
from tests.test_engine_gradcache import SavedActivations

TEXTS = [" ".join(TOPICS[(i + k) % len(TOPICS)] for k in range(5 + 7 * i)) for i in range(6)]


def _loss_and_grads(model) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout masks in both runs
    queries = model.forward_query(TEXTS[:3])
    items = model.forward_items(TEXTS)
    loss = torch.logsumexp(queries @ items.T / 0.05, dim=1).sum() - (queries * items[:3]).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _attention_implementations(model) -> set[str]:
    return {m.config._attn_implementation for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")}


def test_same_loss_and_gradients_with_dropout(tiny_model_dir, tiny_two_tower_dir):
    for directory in (tiny_model_dir, tiny_two_tower_dir):
        model = load_model(directory)
        model.train()
        assert _attention_implementations(model) == {"sdpa"}
        loss, grads = _loss_and_grads(model)
        with recomputed_attention(model) as switched:
            assert switched == (1 if model.same_query_and_items else 2)
            recomputed_loss, recomputed_grads = _loss_and_grads(model)
        assert recomputed_loss == loss
        assert grads.keys() == recomputed_grads.keys() and len(grads) > 10
        for name, grad in grads.items():
            torch.testing.assert_close(recomputed_grads[name], grad, rtol=1e-6, atol=1e-9, msg=name)
        # dropout is really on: another seed gives another loss
        torch.manual_seed(8)
        assert float(model.forward_items(TEXTS[:1]).sum()) != float(model.forward_items(TEXTS[:1]).sum())


def test_fewer_bytes_kept_for_backward(tiny_model_dir):
    model = load_model(tiny_model_dir)
    model.train()

    def kept(recompute: bool) -> int:
        meter = SavedActivations()
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            if recompute:
                with recomputed_attention(model):
                    _loss_and_grads(model)
            else:
                _loss_and_grads(model)
        return meter.peak

    own, recomputed = kept(False), kept(True)
    assert recomputed < 0.8 * own, (recomputed, own)


def test_models_restored_and_saved_without_it(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    with recomputed_attention(model):
        assert _attention_implementations(model) == {NAME}
    assert _attention_implementations(model) == {"sdpa"}
    model.save(tmp_path / "saved")
    assert NAME not in "".join(p.read_text() for p in (tmp_path / "saved").rglob("*.json"))
    reloaded = load_model(tmp_path / "saved")
    reloaded.eval()
    model.eval()
    torch.testing.assert_close(reloaded.encode_items(TEXTS), model.encode_items(TEXTS))


def test_no_grad_and_eval_run_plain_sdpa(tiny_model_dir):
    model = load_model(tiny_model_dir)
    model.eval()
    before = model.encode_items(TEXTS)
    with recomputed_attention(model):
        inside = model.encode_items(TEXTS)
    torch.testing.assert_close(inside, before)
    assert _attention_implementations(model) == {"sdpa"}


def test_without_dropout_is_deterministic_in_train_mode_and_restored(tiny_model_dir):
    """``attention_without_dropout``: attention dropout off (the same output as eval-mode attention
    when the hidden dropout is off too), the models back on SDPA after the block."""
    model = load_model(tiny_model_dir)
    model.eval()
    reference = model.encode_items(TEXTS)
    model.train()
    attention_dropout = {id(m.dropout) for m in model.modules() if m.__class__.__name__.endswith("SelfAttention")}
    assert attention_dropout
    for module in model.modules():  # hidden-state dropout off, so only attention dropout could differ
        if isinstance(module, torch.nn.Dropout) and id(module) not in attention_dropout:
            module.p = 0.0
    torch.manual_seed(1)
    assert not torch.allclose(model.forward_items(TEXTS), reference)  # the model's own attention drops out
    with attention_without_dropout(model) as switched:
        assert switched == 1 and _attention_implementations(model) == {NO_DROPOUT_NAME}
        torch.manual_seed(1)
        first = model.forward_items(TEXTS)
        torch.manual_seed(2)
        second = model.forward_items(TEXTS)
        first.sum().backward()
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first.detach(), reference, rtol=1e-4, atol=1e-5)
    assert _attention_implementations(model) == {"sdpa"}


def test_training_attention_picks_by_the_setting(tiny_model_dir):
    model = load_model(tiny_model_dir)
    with training_attention(model, dropout=True):
        assert _attention_implementations(model) == {NAME}
    with training_attention(model, dropout=False):
        assert _attention_implementations(model) == {NO_DROPOUT_NAME}
