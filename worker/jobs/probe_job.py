"""The diagnostic ``probe`` task kind: sleeps ``seconds`` in small steps.

It reports progress, honours cancel between steps, and records each execution in the
``probe_executions`` collection (task id, attempt, pid, ``finished``) so tests can count how many
times a body really ran. ``refuse`` ends it ``refused``; ``fail_times`` raises an infrastructure
error on its first N attempts. Used by the lifecycle tests, ``clicktune probe`` and
``bench/queue_latency.py``; harmless in production (it touches nothing but its own documents).
"""

from __future__ import annotations

import os
import time

from dao.task_documents import utcnow
from worker.lifecycle import TaskContext, TaskRefused

EXECUTIONS = "probe_executions"
PROGRESS_EVERY_S = 0.25


class ProbeFailure(RuntimeError):
    """The infrastructure error a probe raises on purpose (``fail_times``)."""


def run(ctx: TaskContext) -> dict:
    task = ctx.task
    executions = ctx.db[EXECUTIONS]
    execution_id = executions.insert_one({
        "task_id": task.id, "attempt": task.attempt, "owner": ctx.owner, "pid": os.getpid(),
        "started_at": utcnow(), "finished": False,
    }).inserted_id
    if task.refuse:
        raise TaskRefused(task.refuse)
    if task.attempt <= task.fail_times:
        raise ProbeFailure(f"diagnostic failure on attempt {task.attempt} (fail_times={task.fail_times})")

    start = last_report = time.monotonic()
    if task.seconds > 0:
        ctx.progress("sleeping", 0.0)
    while (elapsed := time.monotonic() - start) < task.seconds:
        ctx.raise_if_canceled()
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            ctx.progress("sleeping", elapsed / task.seconds)
            last_report = time.monotonic()
        time.sleep(min(task.step_s, task.seconds - elapsed))
    executions.update_one({"_id": execution_id}, {"$set": {"finished": True}})
    return {"slept_s": round(time.monotonic() - start, 3), "pid": os.getpid()}
