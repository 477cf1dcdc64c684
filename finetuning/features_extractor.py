"""Where clicks become training pairs: :class:`FeaturesExtractor`.

For a batch of sessions it

1. groups sessions by query text (several sessions of one query pool their evidence),
2. takes the clicked results as positives, weighted by the confidence calculator
   (``_confidences``; a result clicked in some sessions and skipped in others gets the mean
   per-session click weight, clipped to 1: with inverse-propensity click weights that mean is the
   click model's estimate of the result's relevance, so a deep result clicked whenever it was
   looked at counts fully and a stray click among many sessions counts little); when the
   calculator is a relevance model (``relevance(sessions of one query)``, the default
   :class:`~finetuning.click_relevance.ClickRelevanceModel`) the weight is its posterior
   P(relevant) from every session of the query in the batch, clicked or not,
3. takes shown-but-not-clicked results as hard negatives, by default only those ranked above the
   session's last click (the false-negative guard: a result below the last click may never have
   been looked at), downsampled by item group (``_downsample_not_events``: all parts of one object
   are kept or dropped together), weighted by their examination confidence (by
   1 − P(relevant) with a relevance model),
4. embeds every distinct query and every distinct item of the batch exactly once, in
   mini-batches of ``mini_batch_size`` with gradient caching when autograd is on (activation
   memory set by the mini-batch, not by the number of shown results; :mod:`finetuning.grad_cache`)
   or from an :class:`~finetuning.embedding_cache.EmbeddingsCache` in validation,
5. returns :class:`FineTuningFeatures`: the embeddings, an in-batch negative-weight matrix
   (0 for a query's positives and for results it showed but never examined, the examination
   confidence for its hard negatives, 1 for items of other queries), and the seed's pairwise view
   (``positive_ranks``/``negative_ranks``/``target``/``confidences`` for every
   (clicked, shown-not-clicked) pair of a query, filtered by the abs-difference thresholds).

Ranker scores are computed along the embedding axis (see :mod:`finetuning.rankers`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

import lightning.pytorch as pl
import torch

from finetuning.confidences import dummy_confidences
from finetuning.embedding_cache import EmbeddingsCache
from finetuning.features import Batch, FineTuningFeatures, flatten_batch
from finetuning.grad_cache import CachedEmbeddings, embed
from finetuning.inputs.input import FineTuningInput
from finetuning.inputs.query_retriever import QueryRetriever, TextQueryRetriever
from finetuning.models.base import EmbeddingsModelInterface
from finetuning.rankers import Ranker, cosine

class FeaturesExtractor(pl.LightningModule):
    """Turns a batch of sessions into :class:`FineTuningFeatures` (see module docstring).

    Parameters: ``model``; ``ranker`` (default cosine); ``is_similarity`` (True: higher = closer);
    ``not_irrelevant_only`` (True: sessions marked irrelevant are ignored, else all their results
    are hard negatives of their query); ``negative_downsampling_factor`` (share of not-clicked
    item groups kept, 0 < f <= 1); ``min_abs_difference_threshold``/``max_abs_difference_threshold``
    (pairs whose |pos - neg| score gap is outside [min, max] are dropped from the pairwise view);
    ``confidence_calculator`` (default uniform); ``negatives_above_last_click_only`` (default True);
    ``query_retriever`` (default text); ``seed``; ``mini_batch_size`` (most inputs per tower
    forward with autograd: beyond it embeddings are gradient-cached, see :mod:`finetuning.grad_cache`).
    """

    def __init__(
        self,
        model: EmbeddingsModelInterface,
        ranker: Ranker = cosine,
        is_similarity: bool = True,
        not_irrelevant_only: bool = True,
        negative_downsampling_factor: float = 1.0,
        min_abs_difference_threshold: float = 0.0,
        max_abs_difference_threshold: float = float("inf"),
        confidence_calculator: Callable[[Sequence[FineTuningInput]], list[dict[str, float]]] = dummy_confidences,
        negatives_above_last_click_only: bool = True,
        query_retriever: QueryRetriever | None = None,
        seed: int = 0,
        mini_batch_size: int = 32,
    ) -> None:
        super().__init__()
        if not 0 < negative_downsampling_factor <= 1:
            raise ValueError("negative_downsampling_factor must be in (0, 1]")
        self.model = model
        self.ranker = ranker
        self.is_similarity = is_similarity
        self.not_irrelevant_only = not_irrelevant_only
        self.negative_downsampling_factor = negative_downsampling_factor
        self.min_abs_difference_threshold = min_abs_difference_threshold
        self.max_abs_difference_threshold = max_abs_difference_threshold
        self.confidence_calculator = confidence_calculator
        self.negatives_above_last_click_only = negatives_above_last_click_only
        self.query_retriever = query_retriever or TextQueryRetriever()
        if mini_batch_size < 1:
            raise ValueError("mini_batch_size must be >= 1")
        self.mini_batch_size = mini_batch_size
        self._rng = random.Random(seed)

    # --- seed methods -----------------------------------------------------------------
    def _confidences(self, inputs: Sequence[FineTuningInput]) -> list[dict[str, float]]:
        """Per input, ``object_id -> confidence`` for every shown result (see :mod:`finetuning.confidences`)."""
        return self.confidence_calculator(inputs)

    def _downsample_not_events(self, item: FineTuningInput) -> list[str]:
        """Not-clicked results kept as negatives: candidates (above the last click by default, all of
        them for an irrelevant session) grouped by object, a ``negative_downsampling_factor`` share of
        groups kept (at least one) while training; all of them in eval mode."""
        clicked = set(item.clicked_ids)
        if item.is_irrelevant:
            candidates = list(item.results)
        elif not clicked:
            return []
        else:
            last = item.last_click_rank()
            candidates = [
                object_id
                for object_id in item.results
                if object_id not in clicked and (not self.negatives_above_last_click_only or item.rank(object_id) < last)
            ]
        groups: dict[str, list[str]] = defaultdict(list)
        for object_id in candidates:
            groups[item.object_of(object_id)].append(object_id)
        keys = list(groups)
        if self.training and self.negative_downsampling_factor < 1 and keys:
            n_keep = max(1, round(len(keys) * self.negative_downsampling_factor))
            keys = self._rng.sample(keys, n_keep)
        return [object_id for key in keys for object_id in groups[key]]

    def _get_paired_inputs_features(
        self,
        not_irrelevant_input: FineTuningInput | None,
        irrelevant_input: FineTuningInput | None,
        items_set: Mapping[str, Any],
    ) -> FineTuningFeatures:
        """Features of one (ordinary session, irrelevant session) pair; either side may be None."""
        return self._get_fine_tuning_features([i for i in (not_irrelevant_input, irrelevant_input) if i is not None], items_set)

    def forward(self, batch: Batch, items_set: Mapping[str, Any], embeddings: EmbeddingsCache | None = None) -> FineTuningFeatures:
        """Features of a batch; with ``embeddings`` (validation) rows come from that cache, else the
        towers run (gradient-cached beyond ``mini_batch_size`` inputs when autograd is on)."""
        return self._get_fine_tuning_features(flatten_batch(batch), items_set, embeddings)

    # --- the work ---------------------------------------------------------------------
    def _item_ids_of(self, item: FineTuningInput, object_id: str, items_set: Mapping[str, Any]) -> list[str]:
        """Ids to embed for a shown object: its parts when the input maps parts, else the object."""
        if item.part_to_object_id:
            parts = [p for p, o in item.part_to_object_id.items() if o == object_id]
            if parts:
                return parts
        return [object_id]

    def _relevance_by_input(self, inputs: Sequence[FineTuningInput]) -> dict[int, dict[str, float]] | None:
        """``{id(input): {object id: P(relevant)}}`` when the confidence calculator is a relevance
        model (has ``relevance(sessions of one query)``, e.g. :class:`ClickRelevanceModel`); the
        evidence is every session of the batch with the same stored query, those without clicks
        included (grouped by the stored query, so query augmentation cannot split a group)."""
        relevance = getattr(self.confidence_calculator, "relevance", None)
        if relevance is None:
            return None
        by_query: dict[str, list[FineTuningInput]] = defaultdict(list)
        for item in inputs:
            by_query[repr(item.query)].append(item)
        out: dict[int, dict[str, float]] = {}
        for sessions in by_query.values():
            posterior = relevance(sessions)
            out.update({id(item): posterior for item in sessions})
        return out

    def _get_fine_tuning_features(
        self, inputs: Sequence[FineTuningInput], items_set: Mapping[str, Any], embeddings: EmbeddingsCache | None = None
    ) -> FineTuningFeatures:
        relevance = self._relevance_by_input(inputs)
        if self.not_irrelevant_only:
            inputs = [i for i in inputs if not i.is_irrelevant]
        confidences = self._confidences(inputs)

        # 1-3: evidence per query text
        query_order: list[str] = []
        query_values: dict[str, Any] = {}
        click_weights: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        hard: dict[str, dict[str, float]] = defaultdict(dict)
        shown: dict[str, set[str]] = defaultdict(set)
        for item, conf in zip(inputs, confidences):
            text = self.query_retriever(item.query)
            if text not in query_values:
                query_values[text] = text
                query_order.append(text)
            clicked = set(item.clicked_ids)
            for object_id in item.results:
                ids = self._item_ids_of(item, object_id, items_set)
                shown[text].update(ids)
                if not item.is_irrelevant and clicked:
                    for i in ids:
                        if relevance is not None:  # the relevance model's posterior, for clicked results
                            click_weights[text][i].append(relevance[id(item)][object_id] if object_id in clicked else 0.0)
                        else:
                            click_weights[text][i].append(conf.get(object_id, 1.0) if object_id in clicked else 0.0)
            for object_id in self._downsample_not_events(item):
                if relevance is not None:
                    weight = 1.0 - relevance[id(item)][object_id]
                else:
                    weight = 1.0 if item.is_irrelevant else conf.get(object_id, 1.0)
                for i in self._item_ids_of(item, object_id, items_set):
                    hard[text][i] = max(hard[text].get(i, 0.0), weight)

        positives: dict[str, dict[str, float]] = {}
        for text in query_order:
            if relevance is not None:  # already pooled over the query's sessions
                pos = {i: max(w) for i, w in click_weights[text].items() if max(w) > 0}
            else:
                pos = {i: min(1.0, sum(w) / len(w)) for i, w in click_weights[text].items() if sum(w) > 0}
            positives[text] = pos
            for i in pos:
                hard[text].pop(i, None)
        queries = [t for t in query_order if positives[t] or hard[t]]

        item_index: dict[str, int] = {}
        for text in queries:
            for i in [*positives[text], *hard[text]]:
                item_index.setdefault(i, len(item_index))
        item_ids = list(item_index)

        # 4: embed each distinct query and item once
        query_embeddings, item_embeddings, cached = self._embed(queries, item_ids, items_set, embeddings)
        device = query_embeddings.device

        # 5: in-batch negative weights and the pairwise view
        negative_weights = torch.ones(len(queries), len(item_ids))
        shown_mask = torch.zeros(len(queries), len(item_ids), dtype=torch.bool)
        pos_q, pos_i, pos_w = [], [], []
        pair_q, pair_p, pair_n, pair_pc, pair_nc = [], [], [], [], []
        for qi, text in enumerate(queries):
            for i in shown[text]:
                if i in item_index:
                    negative_weights[qi, item_index[i]] = 0.0  # shown but unexamined (or positive): excluded
                    shown_mask[qi, item_index[i]] = True
            for i, w in hard[text].items():
                negative_weights[qi, item_index[i]] = w
            for i, w in positives[text].items():
                negative_weights[qi, item_index[i]] = 0.0
                pos_q.append(qi)
                pos_i.append(item_index[i])
                pos_w.append(w)
                for n, nw in hard[text].items():
                    pair_q.append(qi)
                    pair_p.append(item_index[i])
                    pair_n.append(item_index[n])
                    pair_pc.append(w)
                    pair_nc.append(nw)

        def long(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        def real(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        pq, pp, pn = long(pair_q), long(pair_p), long(pair_n)
        if len(pair_q):
            positive_ranks = self.ranker(query_embeddings[pq], item_embeddings[pp])
            negative_ranks = self.ranker(query_embeddings[pq], item_embeddings[pn])
            gap = (positive_ranks - negative_ranks).detach().abs()
            keep = (gap >= self.min_abs_difference_threshold) & (gap <= self.max_abs_difference_threshold)
        else:
            positive_ranks = negative_ranks = query_embeddings.new_zeros(0)
            keep = torch.zeros(0, dtype=torch.bool, device=device)
        target_value = 1.0 if self.is_similarity else -1.0
        return FineTuningFeatures(
            query_embeddings=query_embeddings,
            item_embeddings=item_embeddings,
            positive_query_index=long(pos_q),
            positive_item_index=long(pos_i),
            positive_weights=real(pos_w),
            negative_weights=negative_weights.to(device),
            pair_query_index=pq[keep],
            pair_positive_index=pp[keep],
            pair_negative_index=pn[keep],
            positive_ranks=positive_ranks[keep],
            negative_ranks=negative_ranks[keep],
            target=torch.full((int(keep.sum()),), target_value, device=device),
            positive_confidences=real(pair_pc)[keep],
            negative_confidences=real(pair_nc)[keep],
            is_similarity=self.is_similarity,
            shown_mask=shown_mask.to(device),
            query_texts=queries,
            item_ids=item_ids,
            cached=cached,
        )

    @staticmethod
    def _rows(items_set: Mapping[str, Any], ids: list[str]) -> list[Any]:
        if hasattr(items_set, "rows"):
            return items_set.rows(ids)
        return [items_set[i] for i in ids]

    def _model_device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def _embed(
        self, queries: list[Any], item_ids: list[str], items_set: Mapping[str, Any], embeddings: EmbeddingsCache | None
    ) -> tuple[torch.Tensor, torch.Tensor, list[CachedEmbeddings]]:
        """(query rows, item rows, pending gradient caches). From ``embeddings`` when given; else
        through the towers in mini-batches of ``mini_batch_size`` (:func:`finetuning.grad_cache.embed`)."""
        if embeddings is not None:
            return embeddings.queries(queries), embeddings.items(item_ids, items_set), []
        device = self._model_device()
        dim = self.model.get_embedding_dimension()
        out: list[torch.Tensor] = []
        cached: list[CachedEmbeddings] = []
        for forward, values in ((self.model.forward_query, queries), (self.model.forward_items, self._rows(items_set, item_ids))):
            if not values:
                out.append(torch.zeros(0, dim, device=device))
                continue
            rows, cache = embed(forward, values, self.mini_batch_size, device)
            out.append(rows)
            if cache is not None:
                cached.append(cache)
        return out[0], out[1], cached
