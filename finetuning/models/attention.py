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
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

NAME = "clicktune_recomputed_sdpa"
_registered = False


def _recomputed_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not (torch.is_grad_enabled() and dropout > 0 and query.device.type == "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, **kwargs)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return sdpa_attention_forward(module, q, k, v, mask, dropout=dropout, **kwargs)[0]

    return checkpoint(attend, query, key, value, attention_mask, use_reentrant=False), None


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, _recomputed_sdpa)
        AttentionMaskInterface.register(NAME, sdpa_mask)  # the same boolean mask SDPA gets
        _registered = True


def _sdpa_models(model: nn.Module) -> list[nn.Module]:
    """The transformers models inside ``model`` that run on SDPA (others are left as they are)."""
    return [
        module for module in model.modules()
        if getattr(getattr(module, "config", None), "_attn_implementation", None) == "sdpa"
        and hasattr(module, "set_attn_implementation")
    ]


@contextmanager
def recomputed_attention(model: nn.Module) -> Iterator[int]:
    """Inside the block the SDPA transformers models of ``model`` recompute attention probabilities
    in the backward pass (see the module docstring); yields how many models were switched."""
    models = _sdpa_models(model)
    if models:
        _register()
    switched: list[nn.Module] = []
    try:
        for hf_model in models:
            hf_model.set_attn_implementation(NAME)
            switched.append(hf_model)
        yield len(switched)
    finally:
        for hf_model in switched:
            hf_model.set_attn_implementation("sdpa")
