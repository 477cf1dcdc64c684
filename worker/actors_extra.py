"""Actors of the Q&A-pairs trainer and the image optimizer (issue 8), beside ``worker.actors``.

Importing this module registers the ``qa_training`` and ``image_optimization`` task kinds and
their Dramatiq actors; ``worker.actors`` imports it so ``dramatiq worker.actors`` serves them.
"""

from __future__ import annotations

from worker.actors import _task_actor
from worker.jobs import image_job, qa_job

qa_training = _task_actor(qa_job.KIND, qa_job.run)
image_optimization = _task_actor(image_job.KIND, image_job.run)
