"""Attention that keeps no probability matrix for the backward pass while training on a CPU.

With attention dropout active (training mode), PyTorch's CPU ``scaled_dot_product_attention`` has
no fused kernel and falls back to the math path, which keeps the softmax output, the dropout mask
and the dropped probabilities of every head for the backward pass: ``heads × seq²`` floats three
times per layer and text. For all-MiniLM-L6-v2 at 256 tokens that is ~60 of the ~108 MB of
activations a document holds; the rest (projections, feed-forward) is linear in the sequence.

:func:`recomputed_attention` switches the transformers models inside a model to an attention
function that runs the same SDPA call under :func:`torch.utils.checkpoint.checkpoint`: the forward
keeps only queries, keys and values, and the backward recomputes the probabilities with the RNG
state of the forward (the same dropout mask), so losses and gradients are bitwise the same while
the activations of a document roughly halve. Recomputing ``softmax(QKᵀ)`` costs less than the
memory traffic it saves (measured: a training step of 16 or 32 MiniLM documents ~10 % faster).

It applies only where it helps: autograd on, dropout > 0, and tensors on the CPU (CUDA's fused
kernels already support dropout without materialising the matrix). Outside the ``with`` block the
models are back on their own attention implementation, so nothing of it is saved with a model:

    >>> with recomputed_attention(model):          # doctest: +SKIP
    ...     trainer.fit(tuner, train_loader, val_loader)

:func:`attention_without_dropout` is the other way out of the math path: inside its block the same
SDPA call runs with attention dropout 0 (the hidden-state dropout of the model is untouched), so the
CPU uses its fused kernel, which keeps no probability matrix either and runs a MiniLM training step
about twice as fast. It changes the regularisation, so ``FineTuningSettings.attention_dropout``
chooses between the two (docs/engine.md has the measurements).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

NAME = "clicktune_recomputed_sdpa"
NO_DROPOUT_NAME = "clicktune_sdpa_without_dropout"
_registered = False


def _recomputed_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not (torch.is_grad_enabled() and dropout > 0 and query.device.type == "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, **kwargs)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return sdpa_attention_forward(module, q, k, v, mask, dropout=dropout, **kwargs)[0]

    return checkpoint(attend, query, key, value, attention_mask, use_reentrant=False), None


def _sdpa_without_dropout(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, **kwargs)


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        for name, function in ((NAME, _recomputed_sdpa), (NO_DROPOUT_NAME, _sdpa_without_dropout)):
            AttentionInterface.register(name, function)
            AttentionMaskInterface.register(name, sdpa_mask)  # the same boolean mask SDPA gets
        _registered = True


def _sdpa_models(model: nn.Module) -> list[nn.Module]:
    """The transformers models inside ``model`` that run on SDPA (others are left as they are)."""
    return [
        module for module in model.modules()
        if getattr(getattr(module, "config", None), "_attn_implementation", None) == "sdpa"
        and hasattr(module, "set_attn_implementation")
    ]


@contextmanager
def _switched_attention(model: nn.Module, name: str) -> Iterator[int]:
    models = _sdpa_models(model)
    if models:
        _register()
    switched: list[nn.Module] = []
    try:
        for hf_model in models:
            hf_model.set_attn_implementation(name)
            switched.append(hf_model)
        yield len(switched)
    finally:
        for hf_model in switched:
            hf_model.set_attn_implementation("sdpa")


def recomputed_attention(model: nn.Module):
    """Inside the block the SDPA transformers models of ``model`` recompute attention probabilities
    in the backward pass (see the module docstring); yields how many models were switched."""
    return _switched_attention(model, NAME)


def attention_without_dropout(model: nn.Module):
    """Inside the block the SDPA transformers models of ``model`` attend without dropout (fused CPU
    kernel; see the module docstring); yields how many models were switched."""
    return _switched_attention(model, NO_DROPOUT_NAME)


def training_attention(model: nn.Module, dropout: bool = True):
    """The attention a training run uses: :func:`recomputed_attention` with ``dropout``, else
    :func:`attention_without_dropout`."""
    return recomputed_attention(model) if dropout else attention_without_dropout(model)
