"""``EmbeddingsFineTuner``: the Lightning module that fine-tunes an embedding model on sessions.

One training step reads top to bottom (:meth:`training_step`): sessions in → features (clicked
and skipped results, embedded once per batch) → loss → backward → optimizer step(s) → learning-rate
scheduler step(s). Optimisation is manual so that a model with separate towers gets two
optimizers (query / items learning rates), each with its own ``StepLR`` stepped every batch,
chained, when ``decay_steps`` is set (``fine_tune`` sets it from ``settings.lr_decay``), with a
linear decay to zero over the run as sentence-transformers training does.

Validation (:meth:`validation_step` / :meth:`on_validation_epoch_end`) computes the loss on
held-out sessions and the metric calculators (held-out retrieval nDCG@10/MRR@10/Recall@k, the
DistanceShift), logs ``val_loss`` and ``val_<metric>`` so EarlyStopping / checkpoint callbacks
can monitor them, and sends them to the tracker. :meth:`evaluate` runs the same validation
outside a Trainer (used to score the model before training).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import lightning.pytorch as pl
import torch
from torch.optim import AdamW
from torch.optim.lr_scheduler import ChainedScheduler, MultiplicativeLR, StepLR

from finetuning.confidences import dummy_confidences
from finetuning.embedding_cache import EmbeddingsCache
from finetuning.features_extractor import Batch, FeaturesExtractor, flatten_batch
from finetuning.inputs.input import FineTuningInput
from finetuning.inputs.items_set import ItemsSet
from finetuning.inputs.query_retriever import QueryRetriever
from finetuning.metrics.base import MetricCalculator, MetricContext
from finetuning.metrics.held_out import combine_judges
from finetuning.metrics.distance_shift import DistanceShift
from finetuning.models.base import EmbeddingsModelInterface
from finetuning.params import FineTuningParams, FineTuningSettings
from finetuning.rankers import Ranker, cosine, score_matrix
from finetuning.tracking.tracker import ExperimentTracker, MetricValue


def validate_scheduler_params(step_size: Any, gamma: Any) -> None:
    """``step_size`` must be a positive int and ``0 < gamma < 1`` (raises ValueError)."""
    if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size <= 0:
        raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < 1:
        raise ValueError(f"gamma must be in (0, 1), got {gamma!r}")


class EmbeddingsFineTuner(pl.LightningModule):
    """Fine-tunes ``model`` on sessions (the seed API).

    Parameters:
        model: the embedding model (its towers decide one or two optimizers).
        items_sets: an :class:`ItemsSet` (object id → content) used for both splits, or a mapping
            ``{"train": ItemsSet, "test": ItemsSet}``.
        query_retriever: turns a session's query into model input.
        loss_func: a loss over :class:`FineTuningFeatures` (see :mod:`finetuning.losses`).
        fine_tuning_params: learning rates, weight decays, frozen layers, downsampling, thresholds.
        tracker: where metrics go (:class:`ExperimentTracker`).
        metric_calculators: validation metrics (default: ``[DistanceShift()]``).
        ranker: score function along the embedding axis (default cosine).
        is_similarity: whether higher ranker scores mean closer (default True).
        confidence_calculator: per-result confidences (default uniform ``dummy_confidences``).
        step_size, gamma: ``StepLR`` of every optimizer (default 500, 0.9); validated.
        gradient_clip_val: gradient norm clipping per optimizer (default 1.0 as in
            sentence-transformers training; ``None`` disables).
        decay_steps: when set, the learning rate also decays linearly to zero over this many
            batches (chained with the StepLR); ``None`` (default) keeps the seed behaviour.
        mini_batch_size: most texts (or images) per tower forward that keeps an autograd graph;
            larger batches are gradient-cached (default 16, see :mod:`finetuning.grad_cache`), so
            activation memory does not grow with the number of shown results.
    """

    def __init__(
        self,
        model: EmbeddingsModelInterface,
        items_sets: ItemsSet | Mapping[str, Mapping[str, Any]],
        query_retriever: QueryRetriever,
        loss_func: torch.nn.Module,
        fine_tuning_params: FineTuningParams,
        tracker: ExperimentTracker,
        metric_calculators: Sequence[MetricCalculator] | None = None,
        ranker: Ranker = cosine,
        is_similarity: bool = True,
        confidence_calculator=dummy_confidences,
        step_size: int = 500,
        gamma: float = 0.9,
        gradient_clip_val: float | None = 1.0,
        decay_steps: int | None = None,
        mini_batch_size: int = 32,
    ) -> None:
        super().__init__()
        validate_scheduler_params(step_size, gamma)
        self.automatic_optimization = False
        self.model = model
        self.items_sets = items_sets
        self.query_retriever = query_retriever
        self.loss_func = loss_func
        self.fine_tuning_params = fine_tuning_params
        self.tracker = tracker
        self.metric_calculators = list(metric_calculators) if metric_calculators is not None else [DistanceShift()]
        self.ranker = ranker
        self.is_similarity = is_similarity
        self.confidence_calculator = confidence_calculator
        self.step_size = step_size
        self.gamma = gamma
        self.gradient_clip_val = gradient_clip_val
        if decay_steps is not None and decay_steps <= 0:
            raise ValueError(f"decay_steps must be a positive integer, got {decay_steps!r}")
        self.decay_steps = decay_steps
        self.features_extractor = FeaturesExtractor(
            model,
            ranker=ranker,
            is_similarity=is_similarity,
            not_irrelevant_only=fine_tuning_params.not_irrelevant_only,
            negative_downsampling_factor=fine_tuning_params.negative_downsampling,
            min_abs_difference_threshold=fine_tuning_params.min_abs_difference_threshold,
            max_abs_difference_threshold=fine_tuning_params.max_abs_difference_threshold,
            confidence_calculator=confidence_calculator,
            negatives_above_last_click_only=fine_tuning_params.negatives_above_last_click_only,
            query_retriever=query_retriever,
            mini_batch_size=mini_batch_size,
        )
        # validation embeddings of the current weights (renewed when the weights change)
        self.embeddings_cache = EmbeddingsCache(model, batch_size=max(64, mini_batch_size))
        if fine_tuning_params.num_fixed_layers > 0:
            model.fix_query_model(fine_tuning_params.num_fixed_layers)
            if not model.same_query_and_items:
                model.fix_item_model(fine_tuning_params.num_fixed_layers)
        self._val_loss_sum = 0.0
        self._val_loss_count = 0
        self.last_validation: dict[str, float] = {}
        self.last_validation_per_query: dict[str, list[float]] = {}  # val_ metric -> value per held-out query
        self.last_validation_queries: dict[str, list[str]] = {}  # val_ metric -> the query texts of those values

    @classmethod
    def create(
        cls,
        model: EmbeddingsModelInterface,
        settings: FineTuningSettings,
        items_sets: ItemsSet | Mapping[str, Mapping[str, Any]],
        query_retriever: QueryRetriever,
        fine_tuning_params: FineTuningParams,
        tracker: ExperimentTracker,
    ) -> "EmbeddingsFineTuner":
        """Build from settings names (loss, metrics, ranker, confidence calculator; see :mod:`finetuning.resolve`)."""
        from finetuning import resolve

        return cls(
            model=model,
            items_sets=items_sets,
            query_retriever=query_retriever,
            loss_func=resolve.loss(settings.loss_func, fine_tuning_params),
            fine_tuning_params=fine_tuning_params,
            tracker=tracker,
            metric_calculators=resolve.metric_calculators(settings.metric_calculators),
            ranker=resolve.ranker(settings.ranker),
            is_similarity=settings.is_similarity,
            confidence_calculator=resolve.confidence_calculator(settings.confidence_calculator),
            step_size=settings.step_size,
            gamma=settings.gamma,
            gradient_clip_val=settings.gradient_clip_val,
            mini_batch_size=settings.mini_batch_size,
        )

    # --- data ---------------------------------------------------------------------------
    def items_set(self, split: str) -> Mapping[str, Any]:
        sets = self.items_sets
        if not isinstance(sets, ItemsSet) and isinstance(sets, Mapping) and split in sets and isinstance(sets[split], Mapping):
            return sets[split]
        return sets

    @torch.no_grad()
    def preprocess_inputs(self, inputs: Sequence[FineTuningInput] | Mapping[str, Sequence[FineTuningInput]], batch_size: int = 64):
        """Give every input without ranks (``None`` or empty, or missing some shown result) the
        ranks the current model assigns to its shown results (1 = best). Inputs with ranks are left
        unchanged. Accepts a list or a ``{"train": [...], "test": [...]}`` mapping; returns it."""
        groups = inputs.items() if isinstance(inputs, Mapping) else [("train", inputs)]
        for split, items in groups:
            items_set = self.items_set(split)
            missing = [i for i in items if not i.has_ranks and i.results]
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                queries = self.model.encode_queries([self.query_retriever(i.query) for i in chunk])
                for row, item in enumerate(chunk):
                    embeddings = self.model.encode_items([items_set[o] for o in item.results])
                    scores = score_matrix(self.ranker, queries[row : row + 1], embeddings)[0]
                    order = torch.argsort(scores, descending=self.is_similarity).tolist()
                    item.ranks = {item.results[j]: position + 1 for position, j in enumerate(order)}
        return inputs

    # --- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self):
        """AdamW for the query tower and, when the towers differ, a second one for the items
        tower; each with a ``StepLR(step_size, gamma)`` stepped after every batch (chained with a
        linear decay to zero over ``decay_steps`` batches when that is set)."""
        validate_scheduler_params(self.step_size, self.gamma)
        params = self.fine_tuning_params
        optimizers = [
            AdamW(list(self.model.get_query_model_params()), lr=params.query_lr, weight_decay=params.query_weight_decay)
        ]
        if not self.model.same_query_and_items:
            optimizers.append(
                AdamW(list(self.model.get_items_model_params()), lr=params.items_lr, weight_decay=params.items_weight_decay)
            )
        schedulers = [self._scheduler(optimizer) for optimizer in optimizers]
        return optimizers, schedulers

    def _scheduler(self, optimizer: torch.optim.Optimizer):
        step = StepLR(optimizer, step_size=self.step_size, gamma=self.gamma)
        if self.decay_steps is None:
            return step
        total = self.decay_steps

        def remaining(done: int) -> float:
            return max(0.0, 1.0 - done / total)

        # multiplicative, so that it composes with the StepLR instead of overwriting its decay
        linear = MultiplicativeLR(optimizer, lambda done: remaining(done) / remaining(done - 1) if remaining(done - 1) > 0 else 1.0)
        return ChainedScheduler([step, linear], optimizer=optimizer)

    def _set_retriever_training(self, training: bool) -> None:
        if hasattr(self.query_retriever, "training"):
            self.query_retriever.training = training  # augmentation (if any) only while training

    @staticmethod
    def _as_list(value) -> list:
        if value is None:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """One optimizer step per batch. Embeddings beyond ``mini_batch_size`` inputs per tower
        come without autograd (gradient caching): ``manual_backward(loss)`` stops at them and
        ``features.backward_through_towers()`` re-embeds them mini-batch by mini-batch to carry
        their gradients into the weights before clipping and stepping."""
        inputs = flatten_batch(batch)
        self._set_retriever_training(True)
        features = self.features_extractor(inputs, self.items_set("train"))
        loss = self.loss_func(features)

        optimizers = self._as_list(self.optimizers())
        for optimizer in optimizers:
            optimizer.zero_grad()
        if loss.requires_grad:  # a batch without any click has nothing to learn from
            self.manual_backward(loss)
            features.backward_through_towers()
            for optimizer in optimizers:
                if self.gradient_clip_val:
                    self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
                optimizer.step()
            for scheduler in self._as_list(self.lr_schedulers()):
                scheduler.step()

        self.log("train_loss", loss.detach(), batch_size=max(1, len(inputs)), prog_bar=True)
        return loss.detach()

    def on_train_start(self) -> None:
        """Lightning keeps the module's mode; sentence-transformers loads in eval mode (no dropout)."""
        self.model.train()

    # --- validation -------------------------------------------------------------------------
    def validation_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Loss of a held-out batch (a list of inputs, of (input, input) tuples, or one tuple),
        from the embeddings cache of the current weights (each distinct text embedded once)."""
        inputs = flatten_batch(batch)
        self._set_retriever_training(False)
        with torch.inference_mode():
            features = self.features_extractor(inputs, self.items_set("test"), embeddings=self.embeddings_cache)
            loss = self.loss_func(features)
        if features.positive_item_index.numel() or len(features):
            self._val_loss_sum += float(loss) * max(1, len(inputs))
            self._val_loss_count += max(1, len(inputs))
        for calculator in self.metric_calculators:
            calculator.update(features, inputs)
        return loss

    def _validation_results(self) -> dict[str, float]:
        """Mean val loss and every metric (``val_`` prefixed); resets the accumulators."""
        mean_loss = self._val_loss_sum / self._val_loss_count if self._val_loss_count else math.nan
        self._val_loss_sum, self._val_loss_count = 0.0, 0
        results = {"val_loss": mean_loss}
        context = MetricContext(
            self.model, self.items_set("test"), self.query_retriever, self.ranker, self.confidence_calculator, self.embeddings_cache
        )
        per_query: dict[str, list[float]] = {}
        queries: dict[str, list[str]] = {}
        for calculator in self.metric_calculators:
            for name, value in calculator.compute(context).items():
                results[f"val_{name}"] = float(value)
            for name, values in getattr(calculator, "last_per_query", {}).items():
                per_query[f"val_{name}"] = list(values)
                queries[f"val_{name}"] = list(getattr(calculator, "last_queries", []))
            calculator.reset()
        for name, values in combine_judges(per_query, queries).items():  # val_both_*: the keeper's and gate's proof
            per_query[name] = values
            results[name] = sum(values) / len(values)
        self.last_validation = results
        self.last_validation_per_query = per_query
        self.last_validation_queries = queries
        return results

    @property
    def optimizer_steps(self) -> int:
        """Training steps so far: Lightning counts each optimizer's step, two a batch for separate towers."""
        return self.global_step // (1 if self.model.same_query_and_items else 2)

    def on_validation_epoch_end(self) -> float:
        """Log ``val_loss`` (the mean over the validation batches) and every metric; returns the mean loss."""
        results = self._validation_results()
        step = self.optimizer_steps
        for name, value in results.items():
            self.log(name, value, prog_bar=name in ("val_loss", self.tracker.main_metric))
            if not math.isnan(value):
                self.tracker.save_metric(MetricValue(name, value, step=step))
        return results["val_loss"]

    @torch.no_grad()
    def evaluate(self, inputs: Iterable[Batch] | Sequence[FineTuningInput], batch_size: int = 16) -> dict[str, float]:
        """The validation of :meth:`on_validation_epoch_end` without a Trainer (nothing logged)."""
        was_training = self.training
        self.eval()
        try:
            items = list(inputs)
            batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
            for batch_idx, batch in enumerate(batches):
                self.validation_step(batch, batch_idx)
            return self._validation_results()
        finally:
            self.train(was_training)
