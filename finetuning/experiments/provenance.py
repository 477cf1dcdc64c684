"""Provenance of a run: which task made it, from which data — the one place that builds run names,
run tags and the dataset input.

The job that trains describes its data once (:class:`DataSummary`: the clickstream batch and its
counts, the item snapshot's loader source, count and digest) and its task once
(:class:`RunContext`: task id, task kind, model line, batch id, attempt). The experiments layer
turns that into

- a readable run name, ``t<first 8 of the task id>-trial<n>`` (``-a<attempt>`` from the second
  attempt on; without a task: the parameter hash, as before) — :func:`run_name`;
- the run's tags (:func:`run_tags`), e.g. ``clicktune.task_id``, ``clicktune.trial``,
  ``clicktune.data_digest``, ``clicktune.items_digest``;
- the batch as an MLflow dataset input (:func:`batch_dataset`): a metadata-only dataset whose
  source is the clickstream batch, whose digest is the data digest and whose profile holds the counts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from pydantic import BaseModel, ConfigDict

from finetuning.experiments import naming

# Tags of a run (and of its model version) that name the task and the data.
TAG_TASK_ID = naming.TAG_TASK_ID
TAG_TASK_KIND = "clicktune.task_kind"
TAG_TRIAL = "clicktune.trial"
TAG_ATTEMPT = "clicktune.attempt"
TAG_DATA_DIGEST = "clicktune.data_digest"
TAG_ITEMS_SOURCE = "clicktune.items_source"
TAG_ITEMS_COUNT = "clicktune.items_count"
TAG_ITEMS_DIGEST = "clicktune.items_digest"
#: MLflow shows this tag as the run's description.
TAG_NOTE = "mlflow.note.content"
# Tags of a registered version: the quality gate's decision.
TAG_GATE_PASSED = "clicktune.gate_passed"
TAG_GATE_REASON = "clicktune.gate_reason"

DATASET_CONTEXT = "train"


class DataSummary(BaseModel):
    """What a fine-tuning task trained on: the batch, its counts, and the item snapshot's identity.

    ``digest`` fingerprints the batch's sessions (same digest, same data); ``items_digest`` the item
    contents that were loaded (:func:`digest_items`)."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    digest: str
    sessions: int
    sessions_used: int
    clicks: int
    queries: int
    train_sessions: int = 0
    held_out_sessions: int = 0
    items_total: int
    items_loaded: int
    items_missing: int
    items_source: str
    items_digest: str

    def profile(self) -> dict[str, Any]:
        """The counts, as MLflow shows them in a dataset's profile."""
        return self.model_dump(exclude={"batch_id", "digest", "items_source", "items_digest"})

    def line(self) -> str:
        """One human sentence: ``batch b1: 160 sessions (150 used), 300 clicks, 16 queries; 57 of 60 items``."""
        return (f"batch {self.batch_id}: {self.sessions} sessions ({self.sessions_used} used; {self.train_sessions} "
                f"train / {self.held_out_sessions} held out), {self.clicks} clicks, {self.queries} distinct queries; "
                f"{self.items_loaded} of {self.items_total} items loaded from {self.items_source} "
                f"({self.items_missing} missing)")


class RunContext(BaseModel):
    """The task a run belongs to (given to :func:`~finetuning.experiments.run_iteration`)."""

    model_config = ConfigDict(frozen=True)

    task_id: str | None = None
    kind: str = "fine_tuning"
    model_line: str
    batch_id: str
    attempt: int = 1
    data: DataSummary | None = None

    @property
    def short_task_id(self) -> str | None:
        return self.task_id[:8] if self.task_id else None


def run_name(context: RunContext | None, trial: int | None, params_id: str) -> str:
    """``t<task id[:8]>-trial<n>[-a<attempt>]``; the parameter hash when there is no task or trial."""
    if context is None or context.task_id is None or trial is None:
        return params_id
    name = f"t{context.short_task_id}-trial{trial}"
    return name if context.attempt <= 1 else f"{name}-a{context.attempt}"


def run_tags(context: RunContext | None, *, model_line: str, batch_id: str | None, params_id: str,
             trial: int | None) -> dict[str, str]:
    """Every tag a run starts with: parameters, model line, batch, and the task and data when known."""
    tags = {naming.TAG_PARAMS_ID: params_id, naming.TAG_MODEL_LINE: model_line}
    if batch_id:
        tags[naming.TAG_BATCH_ID] = batch_id
    if trial is not None:
        tags[TAG_TRIAL] = str(trial)
    if context is not None:
        tags[TAG_TASK_KIND] = context.kind
        tags[TAG_ATTEMPT] = str(context.attempt)
        if context.task_id:
            tags[TAG_TASK_ID] = context.task_id
        if context.data is not None:
            tags.update(data_tags(context.data))
            tags[TAG_NOTE] = (f"{context.kind} task {context.task_id or '-'} (attempt {context.attempt}), "
                              f"trial {trial if trial is not None else '-'}: {context.data.line()}")
    return tags


def data_tags(data: DataSummary) -> dict[str, str]:
    """The data's identity as tags (also put on the registered model version)."""
    return {
        naming.TAG_BATCH_ID: data.batch_id,
        TAG_DATA_DIGEST: data.digest,
        TAG_ITEMS_SOURCE: data.items_source,
        TAG_ITEMS_COUNT: str(data.items_loaded),
        TAG_ITEMS_DIGEST: data.items_digest,
    }


# --------------------------------------------------------------------------------------------
# the batch as an MLflow dataset
# --------------------------------------------------------------------------------------------

class ClickstreamBatchSource(DatasetSource):
    """Where a batch comes from: the service's clickstream store (no URL, so no credentials)."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id

    @staticmethod
    def _get_source_type() -> str:
        return "clicktune_clickstream"

    def load(self, **kwargs: Any) -> Any:
        raise NotImplementedError("read a batch with `clicktune` (ClickstreamDAO), not through MLflow")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> "ClickstreamBatchSource":
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"store": "clicktune clickstream", "batch_id": self.batch_id}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> "ClickstreamBatchSource":
        return cls(source_dict["batch_id"])


class BatchDataset(MetaDataset):
    """A metadata-only dataset of a clickstream batch; ``profile`` holds its counts."""

    def __init__(self, data: DataSummary) -> None:
        self.data = data
        super().__init__(ClickstreamBatchSource(data.batch_id), name=f"clickstream-{data.batch_id}",
                         digest=data.digest[:32])

    @property
    def profile(self) -> dict[str, Any]:
        return self.data.profile()

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self.profile)
        return config


def batch_dataset(data: DataSummary) -> BatchDataset:
    return BatchDataset(data)


# --------------------------------------------------------------------------------------------
# digests
# --------------------------------------------------------------------------------------------

def digest_sessions(sessions: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of the sessions (canonical JSON, ordered by session id): same digest, same data."""
    lines = sorted(json.dumps(dict(s), sort_keys=True, default=str, separators=(",", ":")) for s in sessions)
    hasher = hashlib.sha256()
    for line in lines:
        hasher.update(line.encode())
        hasher.update(b"\n")
    return hasher.hexdigest()


def _content_bytes(content: Any) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode()
    to_bytes = getattr(content, "tobytes", None)  # images (PIL), arrays
    if callable(to_bytes):
        return to_bytes()
    return repr(content).encode()


def digest_items(contents: Mapping[str, Any]) -> str:
    """sha256 over ``(object id, sha256 of content)`` of every loaded item, ordered by id."""
    hasher = hashlib.sha256()
    for object_id in sorted(contents):
        hasher.update(object_id.encode())
        hasher.update(b"\0")
        hasher.update(hashlib.sha256(_content_bytes(contents[object_id])).digest())
    return hasher.hexdigest()
