"""The ``qa_training`` task kind: fine-tune a text model on a Q&A-pairs JSONL (see ``finetuning.qa``).

Request: ``config`` — the fields of :class:`finetuning.qa.QATrainingConfig` (validated at enqueue;
``tracking_uri`` is refused there because task documents never hold secrets: the worker's
``MLFLOW_TRACKING_URI`` is used instead). Progress goes to the task document every few seconds;
cancel stops training after the current step (the checkpoints stay, so a restart resumes).
Unusable input (no file, no valid pairs) ends the task ``refused``, and so does a file or folder
outside the operator's allowed roots (:mod:`worker.jobs.task_paths`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from dao.task_documents import TaskRequest, register_task_kind
from worker.jobs.task_paths import confine_task_paths
from worker.lifecycle import TaskContext, TaskRefused

KIND = "qa_training"


class QATrainingRequest(TaskRequest):
    config: dict[str, Any] = Field(description="QATrainingConfig fields (input_jsonl and output_dir required)")

    @field_validator("config")
    @classmethod
    def _valid_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        from finetuning.qa.config import QATrainingConfig

        if "tracking_uri" in config:
            raise ValueError("tracking_uri may hold credentials: set MLFLOW_TRACKING_URI on the worker instead")
        for required in ("input_jsonl", "output_dir"):
            if not config.get(required):
                raise ValueError(f"config.{required} is required")
        QATrainingConfig.model_validate(config)
        return config


register_task_kind(KIND, "qa_training_tasks", QATrainingRequest)


def _reporter(ctx: TaskContext):
    def report(progress: dict[str, Any]) -> None:
        fields = dict(progress)
        ctx.progress(fields.pop("stage", "training"), fields.pop("fraction", None), **fields)
    return report


def run(ctx: TaskContext) -> dict:
    from finetuning.qa import QADataError, QAResumeMismatch, QATrainingConfig, run_qa

    config = QATrainingConfig.model_validate(ctx.task.config)  # type: ignore[attr-defined]
    confine_task_paths(KIND, {"config.input_jsonl": config.input_jsonl, "config.output_dir": config.output_dir,
                              "config.log_file": config.log_file})
    ctx.progress("reading", 0.0)
    try:
        result = run_qa(config, on_progress=_reporter(ctx), should_stop=ctx.should_stop)
    except (QADataError, QAResumeMismatch) as error:
        raise TaskRefused(str(error)) from error
    if result.stopped:
        ctx.raise_if_canceled()
    summary = result.to_dict()
    summary["invalid_lines"] = summary["invalid_lines"][:20]
    return summary
