"""The configuration of :class:`~finetuning.images.model_optimizer.ModelOptimizer` (its ``config``
dict keys) and the image-data type its methods take."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from finetuning.images.calibration import CalibrationMethod
from finetuning.images.data import IRImageDataset, LabelledImage, LabelledImages

#: training / validation / test images: labelled records, an ``IRImageDataset`` or a
#: ``LabelledImages`` set; ``None`` where accepted means the stored gallery (leave-one-out)
ImageData = Sequence[LabelledImage] | IRImageDataset | LabelledImages | None


def _default_metrics_to_test() -> list[dict[str, Any]]:
    return [{"metric": "cosine", "normalization": True}, {"metric": "euclidean", "normalization": True},
            {"metric": "euclidean", "normalization": False}, {"metric": "dot", "normalization": False}]


class ModelOptimizerSettings(BaseModel):
    """The optimizer's configuration (``config`` dict keys). Accepted for the users' existing
    configs but not used: ``similarity_target`` / ``confidence_target`` are reported as met or
    not; ``scheduler_step_size`` / ``scheduler_gamma`` (the learning rate follows a cosine
    schedule). ``use_triplet_loss`` selects the batch-hard triplet loss unless ``loss`` is given.
    ``patience`` / ``min_improvement``: early stopping on validation top-1 accuracy. Unknown keys
    are kept in ``config`` and logged as ignored."""

    model_config = ConfigDict(extra="allow")

    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, gt=1)
    epochs: int = Field(10, gt=0)
    patience: int | None = Field(10, ge=1)
    min_improvement: float = Field(0.0, ge=0)
    use_contrastive_loss: bool = True
    use_triplet_loss: bool = False
    loss: Literal["supcon", "batch_hard_triplet"] | None = None
    margin: float = Field(0.2, gt=0)
    temperature: float = Field(0.1, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_shift: int = Field(1, ge=0)
    similarity_target: float = 0.8
    confidence_target: float = 0.75
    scheduler_step_size: int = 20
    scheduler_gamma: float = 0.5
    metrics_to_test: list[dict[str, Any]] = Field(default_factory=_default_metrics_to_test)
    calibration: CalibrationMethod = "logistic"
    calibration_top_k: int = Field(5, ge=1)
    search_k: int = Field(5, ge=1)
    ece_bins: int = Field(10, ge=2)
    output_dir: Path = Path("model_optimization")
    seed: int = 0

    @property
    def loss_name(self) -> str:
        return self.loss or ("batch_hard_triplet" if self.use_triplet_loss else "supcon")
