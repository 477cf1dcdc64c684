"""Gradient caching: a batch's embeddings with activation memory bounded by a mini-batch.

A contrastive loss needs every embedding of the batch at once, so the naive step keeps the
autograd graph of every text of the batch alive until ``backward`` (32 queries × ~10 shown
results × up to 256 tokens is several GB on a small model, an out-of-memory error on a GPU with
a base-size one). GradCache (Gao et al., "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup", 2021; sentence-transformers' ``CachedMultipleNegativesRankingLoss``)
splits the step in two:

1. :func:`embed` runs the tower over mini-batches of ``mini_batch_size`` inputs without autograd
   and returns the concatenated embeddings as a leaf tensor that requires grad (the "cache"); the
   torch RNG state before each mini-batch is recorded, so dropout masks can be replayed; the last
   mini-batch runs with autograd and keeps its graph (one mini-batch of activations), so it is
   not computed twice;
2. the loss is computed on those leaves and ``backward`` stops at them (their ``.grad``);
3. :meth:`CachedEmbeddings.backward` backpropagates the kept mini-batch, then re-embeds each
   other mini-batch with autograd under its recorded RNG state (same dropout, so the same
   embeddings) and backpropagates the cached gradient rows through the tower, one mini-batch
   graph alive at a time.

The loss and the parameter gradients equal those of the one-shot forward (to float tolerance);
peak activation memory is that of one mini-batch per tower (the kept ones are released first).
A side of at most ``mini_batch_size``
inputs is embedded directly with autograd (no second pass), so a batch that fits costs exactly
the one-shot forward. Mini-batches group inputs of similar length (less padding); the output
rows keep the input order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

Forward = Callable[[list[Any]], torch.Tensor]


class RandContext:
    """The torch RNG state (CPU and every CUDA device in use) at construction; ``with ctx:``
    runs its block from that state and restores the surrounding state afterwards."""

    def __init__(self, devices: Sequence[torch.device] = ()) -> None:
        self.cpu_state = torch.get_rng_state()
        self.cuda_devices = sorted({torch.cuda.current_device() if d.index is None else d.index for d in devices if d.type == "cuda"})
        self.cuda_states = [torch.cuda.get_rng_state(i) for i in self.cuda_devices]
        self._fork = None

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=self.cuda_devices, enabled=True)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu_state)
        for index, state in zip(self.cuda_devices, self.cuda_states):
            torch.cuda.set_rng_state(state, index)

    def __exit__(self, *exc) -> None:
        self._fork.__exit__(*exc)
        self._fork = None


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def mini_batches(inputs: Sequence[Any], size: int) -> list[list[int]]:
    """Indices of ``inputs`` in chunks of at most ``size``, texts of similar length together, the
    short remainder first: the last chunk (the one :func:`embed` keeps the graph of instead of
    recomputing) is a full one of the longest texts, the costliest to compute twice."""
    order = sorted(range(len(inputs)), key=lambda i: _length(inputs[i]))
    if not order:
        return []
    first = len(order) % size or size
    return [order[:first]] + [order[start : start + size] for start in range(first, len(order), size)]


@dataclass
class CachedEmbeddings:
    """Embeddings computed mostly without autograd (``embeddings`` is a leaf that requires grad)
    and what it takes to push their gradient through the tower: the inputs of each mini-batch and
    its RNG state; the last mini-batch was embedded with autograd and keeps its graph (``kept``),
    so it is not computed twice."""

    embeddings: torch.Tensor
    forward: Forward
    inputs: list[Any]
    chunks: list[list[int]] = field(default_factory=list)
    rng: list[RandContext] = field(default_factory=list)
    kept: torch.Tensor | None = None  # rows of the last chunk, with their graph

    def _grad_rows(self, chunk: list[int], like: torch.Tensor) -> torch.Tensor:
        grad = self.embeddings.grad
        return grad.index_select(0, torch.tensor(chunk, device=grad.device)).to(like.dtype)

    def backward_kept(self) -> None:
        """Backpropagate the last mini-batch through the graph kept from the first pass."""
        if self.kept is not None and self.embeddings.grad is not None:
            self.kept.backward(self._grad_rows(self.chunks[-1], self.kept))
        self.kept = None

    def backward(self) -> None:
        """Re-embed each other mini-batch with autograd (same RNG state, so the same dropout) and
        backpropagate the gradient the loss left on ``embeddings``; no-op when it has none."""
        self.backward_kept()
        if self.embeddings.grad is not None:
            for chunk, rng in zip(self.chunks[:-1], self.rng):
                with rng:
                    rows = self.forward([self.inputs[i] for i in chunk])
                rows.backward(self._grad_rows(chunk, rows))
        self.embeddings.grad = None


def embed(
    forward: Forward, inputs: Sequence[Any], mini_batch_size: int, device: torch.device | None = None
) -> tuple[torch.Tensor, CachedEmbeddings | None]:
    """Embeddings of ``inputs`` (rows in input order) for a training step on ``device``.

    With autograd off (validation) the rows are computed mini-batch by mini-batch and returned
    as a plain tensor. With autograd on, up to ``mini_batch_size`` inputs are embedded in one
    forward that keeps its graph (returned with ``None``); more are embedded without a graph and
    returned as a float32 leaf that requires grad together with the :class:`CachedEmbeddings`
    whose ``backward()`` must run after the loss's ``backward()``.
    """
    inputs = list(inputs)
    if mini_batch_size < 1:
        raise ValueError("mini_batch_size must be >= 1")
    grad = torch.is_grad_enabled()
    if grad and len(inputs) <= mini_batch_size:
        return forward(inputs), None
    chunks = mini_batches(inputs, mini_batch_size)
    devices = [device] if device is not None else []
    parts: list[torch.Tensor] = []
    states: list[RandContext] = []
    kept = None
    for number, chunk in enumerate(chunks):
        values = [inputs[i] for i in chunk]
        if grad and number == len(chunks) - 1:  # the last mini-batch keeps its graph: computed once
            kept = forward(values)
            parts.append(kept.detach())
            continue
        if grad:
            states.append(RandContext(devices))
        with torch.no_grad():
            parts.append(forward(values))
    stacked = torch.cat(parts)
    order = torch.tensor([i for chunk in chunks for i in chunk], device=stacked.device)
    out = torch.empty_like(stacked)
    out[order] = stacked
    if not grad:
        return out, None
    leaf = out.float().detach().requires_grad_(True)
    return leaf, CachedEmbeddings(leaf, forward, inputs, chunks, states, kept)
