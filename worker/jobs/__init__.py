"""Job bodies, one module per task kind: ``run(ctx: TaskContext) -> dict`` (see ``worker.lifecycle``).

:data:`JOBS` is the one table of task kinds → jobs; ``worker.actors`` makes one Dramatiq actor per
entry. Adding a kind: its request/document models registered with ``dao.task_documents.register_task_kind``,
``worker/jobs/<kind>_job.py`` with ``run(ctx)``, and one line here.
"""

from __future__ import annotations

from worker.jobs import fine_tuning_job, image_job, probe_job, qa_job, reindex_job
from worker.lifecycle import Job

JOBS: dict[str, Job] = {
    "fine_tuning": fine_tuning_job.run,
    "reindex": reindex_job.run,
    "probe": probe_job.run,
    qa_job.KIND: qa_job.run,
    image_job.KIND: image_job.run,
}
