"""Names and tags that identify a model line's iterations in MLflow.

An *iteration* is (model line, start reference, batch id): one MLflow experiment named
``clicktune/<model_line>/iter/<start>/<batch>``. Every component is reduced to
``[A-Za-z0-9._-]`` (long or unusual values get a short hash suffix, so two different batch ids
never collide after sanitising). The registered model of a line is ``registered_model_name(line)``,
which the Model Registry accepts (no ``/`` or ``:``).

The start of an iteration is a :class:`finetuning.model_ref.ModelRef` (run, base or registered);
the manager resolves a registered reference to the run that produced that version before naming
the iteration, because an alias moves.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finetuning.model_ref import ModelRef

EXPERIMENT_PREFIX = "clicktune"

# Tags on iteration experiments.
TAG_KIND = "clicktune.kind"
KIND_ITERATION = "iteration"
TAG_MODEL_LINE = "clicktune.model_line"
TAG_START_REF = "clicktune.start_ref"
TAG_BATCH_ID = "clicktune.batch_id"
# Tags on runs.
TAG_PARAMS_ID = "clicktune.params_id"
TAG_MODEL_ID = "clicktune.model_id"
TAG_MODEL_QUALITY = "clicktune.model_quality"
#: Set on every run of a task's attempts (``ExperimentsManager(run_tags=...)``): which task made the run.
TAG_TASK_ID = "clicktune.task_id"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_TOKEN = 64


def safe_token(value: str, max_len: int = MAX_TOKEN) -> str:
    """``value`` reduced to ``[A-Za-z0-9._-]``; a hash suffix is added whenever that changed it."""
    cleaned = _UNSAFE.sub("-", value).strip("-.") or "x"
    if cleaned == value and len(value) <= max_len:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{cleaned[: max_len - 9]}-{digest}"


def start_token(start: "ModelRef") -> str:
    if start.kind == "run":
        return start.value
    if start.kind == "base":
        return "base-" + safe_token(start.value)
    return "registered-" + safe_token(start.body)


def iteration_experiment_name(model_line: str, start: "ModelRef", batch_id: str) -> str:
    """``clicktune/<model_line>/iter/<start>/<batch>``, all components sanitised."""
    return "/".join([EXPERIMENT_PREFIX, safe_token(model_line), "iter", start_token(start), safe_token(batch_id)])


def registered_model_name(model_line: str) -> str:
    """The Model Registry name of a model line (registry-safe: no ``/`` or ``:``)."""
    return safe_token(model_line, max_len=200)
