"""The ``image_optimization`` task kind: adapt an image backbone to labelled images
(see ``finetuning.images``).

Request: ``output_dir``; the images — ``images_dir`` (``<class>/<file>`` folders) or
``dataset="digits"`` (scikit-learn's load_digits); ``backbone_dir`` (any supported weights
layout; for ``digits`` it may be omitted, then the demo backbone is pre-trained first); and
``options`` — other :class:`finetuning.images.ImageOptimizerConfig` fields. Cancel stops after
the current batch; an unreadable backbone or image folder ends the task ``refused``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from dao.task_documents import TaskRequest, register_task_kind
from worker.jobs.task_paths import confine_task_paths
from worker.lifecycle import TaskContext, TaskRefused

KIND = "image_optimization"


class ImageOptimizationRequest(TaskRequest):
    output_dir: str = Field(min_length=1)
    dataset: Literal["folder", "digits"] = "folder"
    images_dir: str | None = None
    backbone_dir: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "ImageOptimizationRequest":
        from finetuning.images import ImageOptimizerConfig

        if self.dataset == "folder" and not (self.images_dir and self.backbone_dir):
            raise ValueError("dataset 'folder' needs images_dir and backbone_dir")
        ImageOptimizerConfig.model_validate({**self.options, "backbone_dir": self.backbone_dir or ".",
                                             "output_dir": self.output_dir})
        return self


register_task_kind(KIND, "image_optimization_tasks", ImageOptimizationRequest)


def run(ctx: TaskContext) -> dict:
    from finetuning.images import ImageOptimizerConfig, load_backbone, load_digits_dataset, load_image_folder, optimize_images
    from finetuning.images.digits import build_pretrained_digits_backbone

    task: Any = ctx.task
    confine_task_paths(KIND, {"output_dir": task.output_dir, "images_dir": task.images_dir,
                              "backbone_dir": task.backbone_dir})
    output_dir = Path(task.output_dir)
    backbone_dir = task.backbone_dir
    try:
        if task.dataset == "digits":
            data = load_digits_dataset()
            if backbone_dir is None:
                ctx.progress("pretraining_demo_backbone", 0.0)
                backbone_dir = str(build_pretrained_digits_backbone(output_dir / "pretrained_backbone"))
        else:
            backbone = load_backbone(backbone_dir)
            data = load_image_folder(task.images_dir, image_size=backbone.image_size, channels=backbone.in_channels)
    except (OSError, ValueError, KeyError) as error:
        raise TaskRefused(f"cannot read the images or the backbone: {error}") from error

    config = ImageOptimizerConfig.model_validate({**task.options, "backbone_dir": backbone_dir, "output_dir": output_dir})

    def report(progress: dict[str, Any]) -> None:
        fields = dict(progress)
        ctx.progress(fields.pop("stage", "training"), fields.pop("fraction", None), **fields)

    result = optimize_images(config, data, on_progress=report, should_stop=ctx.should_stop)
    if result.stopped:
        ctx.raise_if_canceled()
    keys = ("chosen_metric", "test_top1_before_chosen", "test_top1_after_chosen", "model_dir", "sizes")
    summary = {key: result.report[key] for key in keys}
    summary.update(ece_before=result.report["calibration"]["ece_before"], ece_after=result.report["calibration"]["ece_after"],
                   report=str(output_dir / "report.json"))
    return summary
