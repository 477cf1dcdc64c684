"""What a Q&A run returns (:class:`QARunResult`) and the errors it raises before training."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class QADataError(ValueError):
    """The input cannot be trained on (no file, no valid pairs, too few questions)."""


class QAResumeMismatch(ValueError):
    """Checkpoints in ``output_dir`` belong to a run with other data or settings."""


@dataclass
class QARunResult:
    output_dir: str
    test_only: bool
    model_path: str
    read_counts: dict[str, int]
    invalid_lines: list[dict[str, Any]]
    train_examples: int
    eval_examples: int
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    global_step: int = 0
    resumed_from_checkpoint: str | None = None
    best_checkpoint: str | None = None
    completed: bool = False
    stopped: bool = False
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
