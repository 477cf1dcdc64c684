"""``fine_tune``: one training run (one hyperopt trial) from sessions to the best model.

    outcome = fine_tune(model, train_inputs, test_inputs, items_set, params, settings, tracker,
                        callbacks=[StopOnRequest(is_canceled), ProgressReporter(report)])

Steps: seed everything → build the :class:`EmbeddingsFineTuner` from ``settings`` → fit the
click model on the training sessions → fill missing ranks → score the untouched model on the
held-out sessions (``metrics_before``; the figure that chooses is :func:`~finetuning.metrics.held_out.judge_metric`:
the exploration sessions' twin of ``settings.main_metric`` when the log has enough of them; the
tracker is told which, ``tracker.save_quality_metric``) → train with Lightning (learning rate decaying linearly
to zero over the run when ``settings.lr_decay`` is ``"linear"``, validation every
``settings.test_each_n_sessions``; attention probabilities recomputed in the backward pass on a
CPU, or attention dropout off when ``settings.attention_dropout`` is False,
:mod:`finetuning.models.attention`) → score the final weights → restore the best trained weights
when held-out sessions show them better than the untouched model beyond their noise, else the
untouched model (``settings.keep_candidate_z`` and ``keep_min_queries``: a paired per-query test on
:func:`~finetuning.metrics.held_out.proof_metric`, the quality gate's judge; see :class:`KeepBestWeights`) →
``tracker.save_model(model, best_only=True)``. Returns a :class:`TrainingOutcome`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from finetuning.callbacks import KeepBestWeights, StopOnRequest
from finetuning.fine_tuner import EmbeddingsFineTuner
from finetuning.inputs.input import FineTuningInput
from finetuning.inputs.query_retriever import QueryRetriever, TextQueryRetriever
from finetuning.keeper_verdict import KeeperVerdict
from finetuning.metrics.held_out import judge_metric, proof_metric, proof_witnesses
from finetuning.metrics.paired import PairedDifference
from finetuning.models.attention import training_attention
from finetuning.models.base import EmbeddingsModelInterface
from finetuning.params import ExamplesType, FineTuningParams, FineTuningSettings
from finetuning.tracking.tracker import ExperimentTracker, MetricValue


@dataclass
class TrainingOutcome:
    """Result of :func:`fine_tune`. Metric names carry the ``val_`` prefix."""

    main_metric: str
    best_quality: float
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    best_step: int | None
    steps: int
    stopped: bool
    seconds: float
    train_sessions: int
    model_saved: bool = False
    keeper: KeeperVerdict | None = None  # how KeepBestWeights chose between the best trained weights and the start
    # metric -> (start, kept weights) per held-out query, the same queries in the same order
    held_out_per_query: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    @property
    def selection(self) -> str | None:
        """The keeper's decision: ``"candidate beats start"`` or ``"start kept"``."""
        return self.keeper.decision if self.keeper else None

    @property
    def proof(self) -> PairedDifference | None:
        """The keeper's paired test of the best trained weights against the start."""
        return self.keeper.proof if self.keeper else None

    @property
    def per_query_before(self) -> list[float] | None:
        """The main metric per held-out query of the start weights."""
        return self.held_out_per_query.get(self.main_metric, (None, None))[0]

    @property
    def per_query_after(self) -> list[float] | None:
        """The main metric per held-out query of the kept weights (paired with :attr:`per_query_before`)."""
        return self.held_out_per_query.get(self.main_metric, (None, None))[1]

    @property
    def improved(self) -> bool:
        before = self.metrics_before.get(self.main_metric, math.nan)
        return not math.isnan(self.best_quality) and (math.isnan(before) or self.best_quality != before)


def order_examples(inputs: Sequence[FineTuningInput], params: FineTuningParams, seed: int = 0) -> list[FineTuningInput]:
    """Training sessions in ``params.examples_order`` (each group shuffled, no session twice)."""
    rng = random.Random(seed)
    chosen: list[FineTuningInput] = []
    taken: set[int] = set()
    for kind in params.examples_order:
        kind = ExamplesType(kind)
        if kind == ExamplesType.all_examples:
            group = list(inputs)
        elif kind == ExamplesType.positive_examples:
            group = [i for i in inputs if not i.is_irrelevant and i.clicked_ids]
        else:
            group = [i for i in inputs if i.is_irrelevant]
        rng.shuffle(group)
        for item in group:
            if id(item) not in taken:
                taken.add(id(item))
                chosen.append(item)
    return chosen


def sessions_by_query(examples: Sequence[FineTuningInput], query_key=lambda query: str(query)) -> list[list[FineTuningInput]]:
    """Each distinct query's sessions, queries in the order they first appear in ``examples``."""
    groups: dict[str, list[FineTuningInput]] = {}
    for item in examples:
        groups.setdefault(query_key(item.query), []).append(item)
    return list(groups.values())


def batches_by_query(groups: Sequence[Sequence[FineTuningInput]], batch_size: int) -> list[list[FineTuningInput]]:
    """Batches of ``batch_size`` distinct queries (groups of :func:`sessions_by_query`), each with all
    of its sessions, so evidence from repeated sessions is pooled."""
    return [[item for group in groups[i : i + batch_size] for item in group] for i in range(0, len(groups), batch_size)]


def epoch_batches(examples: Sequence[FineTuningInput], settings: FineTuningSettings,
                  query_key=lambda query: str(query)) -> list[list[FineTuningInput]]:
    """One epoch's batches, in the order of ``examples``: ``settings.batch_size`` distinct queries a
    batch, each with all its sessions (``group_sessions_by_query``), or that many sessions; shrunk
    by :func:`steps_scaled_batch_size` so that a small log still gets ``min_steps_per_epoch`` steps."""
    if settings.group_sessions_by_query:
        groups = sessions_by_query(examples, query_key)
    else:
        groups = [[item] for item in examples]
    size = steps_scaled_batch_size(len(groups), settings.batch_size, settings.min_steps_per_epoch, settings.min_batch_size)
    return batches_by_query(groups, size)


def steps_scaled_batch_size(n_groups: int, batch_size: int, min_steps: int, min_batch_size: int) -> int:
    """The batch size that gives an epoch of ``n_groups`` queries (or sessions) at least
    ``min_steps`` optimizer steps, never above ``batch_size`` nor below ``min_batch_size``.

    >>> steps_scaled_batch_size(108, 32, 16, 4), steps_scaled_batch_size(727, 32, 16, 4)
    (6, 32)
    """
    if min_steps <= 0 or n_groups <= 0:
        return batch_size
    return max(min(batch_size, min_batch_size), min(batch_size, n_groups // min_steps))


def _device_for(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _bf16_native(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def training_precision(setting: str, device: torch.device) -> str:
    """Lightning's ``precision`` for ``settings.precision``: ``"auto"`` is ``"bf16-mixed"`` where the
    device computes bfloat16 natively (AVX512-BF16 or AMX CPUs, CUDA GPUs that support it) and
    ``"32-true"`` elsewhere (emulated bfloat16 is slower than float32); any other value is passed on.

    >>> training_precision("32-true", torch.device("cpu"))
    '32-true'
    """
    if setting != "auto":
        return setting
    return "bf16-mixed" if _bf16_native(device) else "32-true"


def _val_check_interval(test_each_n_sessions: float, n_batches: int, sessions_per_batch: float) -> float | int:
    if test_each_n_sessions <= 0:
        return 1.0
    if test_each_n_sessions < 1:
        return float(test_each_n_sessions)
    return max(1, min(n_batches, round(test_each_n_sessions / max(sessions_per_batch, 1.0))))


def fine_tune(
    model: EmbeddingsModelInterface,
    train_inputs: Sequence[FineTuningInput],
    test_inputs: Sequence[FineTuningInput],
    items_set: Mapping[str, Any],
    params: FineTuningParams,
    settings: FineTuningSettings,
    tracker: ExperimentTracker,
    callbacks: Sequence[pl.Callback] = (),
    accelerator: str = "auto",
    query_retriever: QueryRetriever | None = None,
    enable_progress_bar: bool = False,
    save_model: bool = True,
    eval_batch_size: int = 64,
) -> TrainingOutcome:
    """Train ``model`` in place on ``train_inputs``, validate on ``test_inputs``; see module docstring."""
    started = time.perf_counter()
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    tuner = EmbeddingsFineTuner.create(model, settings, items_set, query_retriever or TextQueryRetriever(), params, tracker)
    if hasattr(tuner.confidence_calculator, "fit"):
        tuner.confidence_calculator.fit(train_inputs)
    tracker.save_params(params.to_mlflow_params())

    device = _device_for(accelerator)
    tuner.to(device)
    tuner.preprocess_inputs({"train": list(train_inputs), "test": list(test_inputs)})
    mode = "max" if settings.higher_is_better else "min"
    metrics_before = tuner.evaluate(test_inputs, batch_size=settings.batch_size)
    main = judge_metric(settings.main_metric, metrics_before)
    tracker.save_quality_metric(main)
    for name, value in metrics_before.items():
        if not math.isnan(value):
            tracker.save_metric(MetricValue(name, value, step=0))
    keeper = KeepBestWeights(
        main, mode, initial_score=metrics_before.get(main), restore_on_fit_end=False,
        prove_z=settings.keep_candidate_z, min_queries=settings.keep_min_queries,
        proof_metric=proof_metric(settings.main_metric, metrics_before),
        witnesses=proof_witnesses(settings.main_metric, metrics_before),
    )
    keeper.start_metrics = dict(metrics_before)
    keeper.start_per_query_by_metric = dict(tuner.last_validation_per_query)
    keeper.best_metrics = dict(metrics_before)

    examples = order_examples(train_inputs, params, seed=settings.seed)
    batches = epoch_batches(examples, settings, tuner.query_retriever)
    train_loader = DataLoader(batches, batch_size=None, shuffle=False, collate_fn=lambda batch: batch)
    val_loader = DataLoader(list(test_inputs), batch_size=settings.batch_size, shuffle=False, collate_fn=list)
    n_batches = max(1, len(train_loader))
    n_optimizers = 1 if model.same_query_and_items else 2
    if settings.lr_decay == "linear":
        total = n_batches * settings.num_epochs
        tuner.decay_steps = min(total, settings.max_steps) if settings.max_steps > 0 else total
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=settings.num_epochs,
        # with manual optimisation every optimizer.step() counts as a global step
        max_steps=settings.max_steps * n_optimizers if settings.max_steps > 0 else -1,
        precision=training_precision(settings.precision, device),
        val_check_interval=_val_check_interval(settings.test_each_n_sessions, n_batches, len(examples) / n_batches),
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        callbacks=[keeper, *callbacks],
    )
    if examples:
        with training_attention(model, dropout=settings.attention_dropout):
            trainer.fit(tuner, train_loader, val_loader)
    steps = trainer.global_step // n_optimizers

    tuner.to(device)
    if steps > 0 and keeper.last_validated_step != trainer.global_step:
        # the last weights were never validated (max_steps or a stop request ended training)
        metrics_final = tuner.evaluate(test_inputs, batch_size=settings.batch_size)
        for name, value in metrics_final.items():
            if not math.isnan(value):
                tracker.save_metric(MetricValue(name, value, step=steps))
        if main in metrics_final:
            keeper.consider(metrics_final[main], model, steps, metrics_final, tuner.last_validation_per_query.get(main),
                            tuner.last_validation_per_query)
    keeper.restore(model)
    metrics_after = keeper.best_metrics
    best_quality = keeper.best_score if keeper.best_score is not None else metrics_after.get(main, math.nan)
    model_saved = tracker.save_model(model, best_only=True, quality=best_quality) if save_model else False
    return TrainingOutcome(
        main_metric=main,
        best_quality=float(best_quality),
        metrics_before=metrics_before,
        metrics_after=metrics_after,
        best_step=keeper.best_step,
        steps=steps,
        stopped=any(isinstance(c, StopOnRequest) and c.stopped for c in callbacks),
        seconds=time.perf_counter() - started,
        train_sessions=len(examples),
        model_saved=model_saved,
        keeper=keeper.verdict(),
        held_out_per_query=keeper.held_out_per_query(),
    )
