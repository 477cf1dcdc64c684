"""The ``fine_tuning`` job — STUB until issue 7.

For now it only completes the lifecycle (two progress stages, honours cancel) and returns no
result fields. The real body (load the batch's sessions, fine-tune with hyperopt + MLflow, register
the best model, optionally enqueue a reindex) replaces this module's ``run`` in issue 7; the
signature ``run(ctx: TaskContext) -> dict`` (result fields of ``FineTuningResult``) stays.
"""

from __future__ import annotations

from worker.lifecycle import TaskContext


def run(ctx: TaskContext) -> dict:
    ctx.progress("preparing", 0.0)
    ctx.raise_if_canceled()
    ctx.progress("stub: nothing to train until issue 7", 1.0)
    return {}
