"""Progress files of a Q&A run, written by a ``transformers.TrainerCallback``.

- ``training_metrics.jsonl``: one line per logging step with the documented fields
  ``{"timestamp", "epoch", "step", "loss"}`` plus ``learning_rate`` and ``attempt``; and one
  line per evaluation ``{"timestamp", "epoch", "step", "eval": {...metrics}, "attempt"}`` (no
  ``loss`` key, so a reader of loss lines can skip it). ``attempt`` counts the processes that
  worked on this output directory (1, then 2 after a resume …).
- ``training_progress.json``: the run's state, rewritten atomically at every change. The
  documented fields: ``training_completed``, ``completed_at``, ``duration_seconds``,
  ``base_model``, ``num_epochs``, ``train_examples``, ``eval_examples``, ``final_model_path``
  (and ``error`` when a run failed); clicktune's own: ``completed`` (= ``training_completed``),
  ``finished_at`` (= ``completed_at``), ``epochs`` (= ``num_epochs``), ``started_at``,
  ``updated_at``, ``global_step``, ``max_steps``, ``last_checkpoint``,
  ``resumed_from_checkpoint``, ``resumed_from_step``, ``best_checkpoint``, ``best_metric``,
  ``metrics_before``, ``metrics_after``, ``attempt``.

The callback also forwards progress to an optional ``on_progress(dict)`` and stops training
cleanly (after the current step) when ``should_stop()`` returns true, so a worker can report and
cancel without this package knowing about the worker.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

METRICS_FILE = "training_metrics.jsonl"
PROGRESS_FILE = "training_progress.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


class ProgressFile:
    """``training_progress.json``: read, update fields, write atomically (temp file + rename)."""

    def __init__(self, output_dir: Path, name: str = PROGRESS_FILE) -> None:
        self.path = Path(output_dir) / name
        self.data: dict[str, Any] = self.read(output_dir, name)

    @staticmethod
    def read(output_dir: Path, name: str = PROGRESS_FILE) -> dict[str, Any]:
        path = Path(output_dir) / name
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.data["updated_at"] = utc_now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)


class ProgressCallback(TrainerCallback):
    """Writes the two progress files; see the module docstring for their fields."""

    def __init__(
        self,
        output_dir: Path,
        progress: ProgressFile,
        attempt: int,
        best_metric_key: str,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        metrics_file: str = METRICS_FILE,
    ) -> None:
        self.metrics_path = Path(output_dir) / metrics_file
        self.progress = progress
        self.attempt = attempt
        self.best_metric_key = best_metric_key
        self.on_progress = on_progress
        self.should_stop = should_stop
        self._last_report = 0.0

    def _append(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _report(self, state: Any, stage: str, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < 2.0:
            return
        self._last_report = now
        self.on_progress({
            "stage": stage,
            "step": state.global_step,
            "epoch": state.epoch,
            "fraction": state.global_step / state.max_steps if state.max_steps else 0.0,
            "best_metric": state.best_metric,
        })

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress.update(global_step=state.global_step, max_steps=state.max_steps, attempt=self.attempt)
        self._report(state, "training", force=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._report(state, "training")
        if self.should_stop is not None and self.should_stop():
            control.should_training_stop = True
            self.progress.update(stop_requested=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self._append({
            "timestamp": utc_now(), "epoch": state.epoch, "step": state.global_step,
            "loss": float(logs["loss"]), "learning_rate": logs.get("learning_rate"), "attempt": self.attempt,
        })

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        from finetuning.qa.evaluation import plain_metrics

        plain = plain_metrics(metrics or {})
        self._append({"timestamp": utc_now(), "epoch": state.epoch, "step": state.global_step,
                      "eval": plain, "attempt": self.attempt})
        self.progress.update(global_step=state.global_step, last_eval=plain)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress.update(
            global_step=state.global_step,
            last_checkpoint=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"),
            best_checkpoint=state.best_model_checkpoint,
            best_metric=state.best_metric,
        )
        self._report(state, "training", force=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress.update(global_step=state.global_step, best_checkpoint=state.best_model_checkpoint,
                             best_metric=state.best_metric)
