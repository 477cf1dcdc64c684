"""Training curves: the loss and learning rate of every optimizer step, sent to the tracker.

``TrainingCurves(tracker)`` is a Lightning callback. After each training batch it reports
``train_loss`` (what ``training_step`` returned) and ``lr`` (the learning rate that batch used, read
before the step; ``lr_items`` too when the model has a separate items tower) with ``step`` = the
number of optimizer steps done so far (1, 2, …; Lightning's global step over the number of
optimizers), the step axis of the held-out evaluations of :func:`finetuning.train.fine_tune`
(step 0 is the start model). MLflow then draws
them as lines, not dots.

Readings are buffered and sent together (``tracker.save_metrics``) every ``flush_seconds`` and
when training ends or fails: one server call per step would cost ~25 ms each against a local
MLflow server, as much as a whole GPU step; batched, the curves still update every few seconds.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import torch

from finetuning.tracking.tracker import ExperimentTracker, MetricValue

LR_NAMES = ("lr", "lr_items")


class TrainingCurves(pl.Callback):
    """Report ``train_loss`` and ``lr`` of every ``every_n_steps``-th optimizer step to ``tracker``."""

    def __init__(self, tracker: ExperimentTracker, every_n_steps: int = 1, flush_seconds: float = 5.0) -> None:
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        self.tracker = tracker
        self.every_n_steps = every_n_steps
        self.flush_seconds = flush_seconds
        self.steps = 0
        self._lrs: list[float] = []
        self._pending: list[MetricValue] = []
        self._flushed_at = time.monotonic()

    def flush(self) -> None:
        """Send the buffered readings now."""
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        if pending:
            self.tracker.save_metrics(pending)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._lrs = [float(optimizer.param_groups[0]["lr"]) for optimizer in trainer.optimizers]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # manual optimisation: every optimizer.step() is a Lightning global step
        self.steps = trainer.global_step // max(1, len(trainer.optimizers))
        if self.steps % self.every_n_steps:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            loss = float(loss.detach())
        if loss is not None and not math.isnan(float(loss)):
            self._pending.append(MetricValue("train_loss", float(loss), step=self.steps))
        self._pending.extend(MetricValue(name, lr, step=self.steps) for name, lr in zip(LR_NAMES, self._lrs))
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()  # the curve up to a validation is on the server when its metrics arrive

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        try:
            self.flush()
        except Exception:  # keep the training error, not a logging one
            pass
