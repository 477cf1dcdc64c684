"""Names and tags that identify a model line's iterations in MLflow.

An *iteration* is (model line, start reference, batch id): one MLflow experiment named
``clicktune/<model_line>/iter/<start>/<batch>``. Every component is reduced to
``[A-Za-z0-9._-]`` (long or unusual values get a short hash suffix, so two different batch ids
never collide after sanitising). The registered model of a line is ``registered_model_name(line)``,
which the Model Registry accepts (no ``/`` or ``:``).

Start references (the ``embedding_model_id`` of a task):

- ``run:<32 hex>`` or a bare 32-hex MLflow run id  → ``StartRef("run", run_id)``
- ``base:<name>`` (a base model known to ``finetuning.models.registry``) → ``StartRef("base", name)``
- ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` → ``StartRef("registered", uri)``;
  the manager resolves it to the run that produced that version before naming the iteration,
  because an alias moves.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

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

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_TOKEN = 64


@dataclass(frozen=True)
class StartRef:
    """What an iteration starts from: an MLflow run, a base model, or a registered version."""

    kind: Literal["run", "base", "registered"]
    value: str

    def __str__(self) -> str:
        return {"run": "run:", "base": "base:", "registered": ""}[self.kind] + self.value


def parse_start_ref(ref: str) -> StartRef:
    """Parse a start reference; raises ``ValueError`` for anything else."""
    ref = ref.strip()
    if ref.startswith("run:") and _RUN_ID.match(ref[4:]):
        return StartRef("run", ref[4:])
    if _RUN_ID.match(ref):
        return StartRef("run", ref)
    if ref.startswith("base:") and len(ref) > 5:
        return StartRef("base", ref[5:])
    if ref.startswith("models:/") and len(ref) > 8:
        return StartRef("registered", ref)
    raise ValueError(
        f"unrecognised start reference {ref!r}: expected run:<32 hex>, a bare run id, base:<name> "
        "or models:/<name>@<alias>"
    )


def safe_token(value: str, max_len: int = MAX_TOKEN) -> str:
    """``value`` reduced to ``[A-Za-z0-9._-]``; a hash suffix is added whenever that changed it."""
    cleaned = _UNSAFE.sub("-", value).strip("-.") or "x"
    if cleaned == value and len(value) <= max_len:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{cleaned[: max_len - 9]}-{digest}"


def start_token(start: StartRef) -> str:
    if start.kind == "run":
        return start.value
    if start.kind == "base":
        return "base-" + safe_token(start.value)
    return "registered-" + safe_token(start.value.removeprefix("models:/"))


def iteration_experiment_name(model_line: str, start: StartRef, batch_id: str) -> str:
    """``clicktune/<model_line>/iter/<start>/<batch>``, all components sanitised."""
    return "/".join([EXPERIMENT_PREFIX, safe_token(model_line), "iter", start_token(start), safe_token(batch_id)])


def registered_model_name(model_line: str) -> str:
    """The Model Registry name of a model line (registry-safe: no ``/`` or ``:``)."""
    return safe_token(model_line, max_len=200)
