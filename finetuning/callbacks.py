"""Lightning callbacks of the fine-tuning engine, taking plain callables (no worker imports).

- :class:`StopOnRequest`: ``should_stop()`` is polled every ``every_n_steps`` training batches;
  when it returns True the Trainer stops cleanly after the batch (the worker passes a check of the
  task's ``cancel_requested`` flag).
- :class:`ProgressReporter`: ``on_progress(dict)`` every ``every_n_steps`` batches and after every
  validation, with ``stage``, ``epoch``, ``step`` (training batches done), ``fraction`` (of
  ``total_steps``), ``train_loss`` and the latest validation metrics.
- :class:`KeepBestWeights`: after each validation, copies the model weights when ``monitor``
  improved; at the end of fit restores the best copy, so the model that leaves training is the
  best one seen, never the last. Seeded with the weights before training and their score, it never
  returns a model worse (on validation) than the starting one.
"""

from __future__ import annotations

import math
from typing import Callable

import lightning.pytorch as pl
import torch


class StopOnRequest(pl.Callback):
    def __init__(self, should_stop: Callable[[], bool], every_n_steps: int = 1) -> None:
        self.should_stop = should_stop
        self.every_n_steps = max(1, every_n_steps)
        self.stopped = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.every_n_steps == 0 and self.should_stop():
            self.stopped = True
            trainer.should_stop = True


class ProgressReporter(pl.Callback):
    def __init__(self, on_progress: Callable[[dict], None], total_steps: int | None = None, every_n_steps: int = 10) -> None:
        self.on_progress = on_progress
        self.total_steps = total_steps
        self.every_n_steps = max(1, every_n_steps)
        self.steps_done = 0
        self.last_metrics: dict[str, float] = {}

    def _report(self, trainer, stage: str, extra: dict | None = None) -> None:
        fraction = min(1.0, self.steps_done / self.total_steps) if self.total_steps else None
        loss = trainer.callback_metrics.get("train_loss")
        report = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "step": self.steps_done,
            "fraction": fraction,
            "train_loss": float(loss) if loss is not None else None,
            **self.last_metrics,
            **(extra or {}),
        }
        self.on_progress(report)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps_done += 1
        if self.steps_done % self.every_n_steps == 0:
            self._report(trainer, "training")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.last_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self._report(trainer, "validation")


class KeepBestWeights(pl.Callback):
    def __init__(
        self, monitor: str = "val_ndcg@10", mode: str = "max", initial_score: float | None = None, restore_on_fit_end: bool = True
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")
        self.monitor = monitor
        self.mode = mode
        self.best_score = initial_score
        self.best_step: int | None = 0 if initial_score is not None else None
        self._best_state: dict[str, torch.Tensor] | None = None
        self.restore_on_fit_end = restore_on_fit_end
        self.best_metrics: dict[str, float] = {}
        self.last_validated_step: int | None = None
        self.restored = False

    def _better(self, score: float) -> bool:
        if math.isnan(score):
            return False
        if self.best_score is None or math.isnan(self.best_score):
            return True
        return score > self.best_score if self.mode == "max" else score < self.best_score

    @staticmethod
    def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.best_score is not None:
            self._best_state = self._snapshot(pl_module.model)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.last_validated_step = trainer.global_step
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
            self.consider(float(value), pl_module.model, trainer.global_step, metrics)

    def consider(
        self, score: float, model: torch.nn.Module, step: int | None = None, metrics: dict[str, float] | None = None
    ) -> bool:
        """Keep ``model``'s weights (and ``metrics``) if ``score`` beats the best so far."""
        if not self._better(score):
            return False
        self.best_score = score
        self.best_step = step
        self.best_metrics = dict(metrics or {})
        self._best_state = self._snapshot(model)
        return True

    def restore(self, model: torch.nn.Module) -> bool:
        """Load the best weights into ``model`` (no-op when nothing was kept)."""
        if self._best_state is None:
            return False
        model.load_state_dict(self._best_state)
        self.restored = True
        return True

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.restore_on_fit_end:
            self.restore(pl_module.model)
