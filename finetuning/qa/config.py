"""The Q&A fine-tuning configuration: a pydantic model read from JSON, overridden by CLI flags.

    config = QATrainingConfig.from_json("config.json", overrides={"epochs": 1})

Defaults: max_seq_length 384, 3 epochs, batch size 16, learning rate 2e-5, warmup = 10 % of the
steps, train split 0.9, MNRL. ``None`` overrides are ignored, so a CLI can pass all of its flags
and only the given ones win.

Two spellings of a key are accepted: clicktune's field name and the name the fine-tuner's users
already write in their config files (:data:`DOCUMENTED_KEYS`), e.g. ``num_epochs`` for
``epochs``, ``loss_function`` for ``loss``, ``evaluation_steps`` for ``eval_steps``. A key given
both ways with different values is an error that names both. Loss names are matched without
regard to case (``multiplenegativesrankingloss`` works, as it did for those users).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

LossName = Literal[
    "MultipleNegativesRankingLoss",
    "ContrastiveLoss",
    "CosineSimilarityLoss",
    "OnlineContrastiveLoss",
]
LOSS_NAMES: tuple[str, ...] = LossName.__args__  # type: ignore[attr-defined]

#: documented (users' config files) key → clicktune field name
DOCUMENTED_KEYS: dict[str, str] = {
    "num_epochs": "epochs",
    "loss_function": "loss",
    "evaluation_steps": "eval_steps",
}
#: where the log goes when ``log_file`` is not given: under ``output_dir`` (see ``log_path``)
DEFAULT_LOG_FILE = Path("logs") / "embedding_finetuning.log"


def canonical_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with documented keys renamed to field names; raises ``ValueError`` naming both
    keys when one setting is given both ways with different values."""
    out = dict(values)
    for documented, field in DOCUMENTED_KEYS.items():
        if documented not in out:
            continue
        value = out.pop(documented)
        if field in out and out[field] != value:
            raise ValueError(f"{documented}={value!r} and {field}={out[field]!r} set the same option to different values; give one")
        out[field] = value
    return out


class QATrainingConfig(BaseModel):
    """Everything one Q&A training (or ``test_only`` evaluation) run needs.

    - ``base_model``: a local sentence-transformers / HF directory, a known name such as
      ``all-MiniLM-L6-v2`` (weights shipped in a pip package), or an installed package exposing
      ``get_model_path()``. Nothing is downloaded.
    - ``warmup_steps``: ``None`` means ``warmup_ratio`` (10 %) of the total optimisation steps.
    - ``eval_steps`` / ``save_steps``: ``None`` means once per epoch. With both set,
      ``save_steps`` must be a multiple of ``eval_steps`` (the best checkpoint is chosen by
      the evaluation that ran at a save).
    - ``answer_text``: what the model sees as the answer: the answer, the context, or both.
    - ``tracking_uri``: MLflow tracking URI (falls back to ``MLFLOW_TRACKING_URI``); a secret,
      since it may carry credentials.
    - ``resume``: continue from the last complete checkpoint in ``output_dir/checkpoints``.
    - ``log_file``: the run's log; by default ``output_dir/logs/embedding_finetuning.log``
      (see :attr:`log_path`). ``progress_file`` / ``metrics_file``: names of the progress files
      under ``output_dir``.
    """

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    input_jsonl: Path | None = None
    output_dir: Path = Path("qa_output")
    base_model: str = "all-MiniLM-L6-v2"
    max_seq_length: int = Field(384, gt=0)
    epochs: int = Field(3, gt=0, validation_alias=AliasChoices("epochs", "num_epochs"))
    max_steps: int = Field(-1, description="stop after this many steps (-1: run all epochs)")
    train_batch_size: int = Field(16, gt=1)
    eval_batch_size: int = Field(16, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    train_split: float = Field(0.9, gt=0, lt=1)
    eval_steps: int | None = Field(None, gt=0, validation_alias=AliasChoices("eval_steps", "evaluation_steps"))
    save_steps: int | None = Field(None, gt=0)
    save_total_limit: int = Field(2, gt=0)
    logging_steps: int = Field(10, gt=0, description="loss line every N steps (at most one epoch's steps apart)")
    loss: LossName = Field("MultipleNegativesRankingLoss", validation_alias=AliasChoices("loss", "loss_function"))
    negatives_per_pair: int = Field(1, ge=1, description="other questions' answers per pair (pair losses)")
    answer_text: Literal["answer", "context", "answer_and_context"] = "answer"
    best_metric: Literal["mrr@10", "ndcg@10", "recall@10"] = "mrr@10"
    recall_at_k: list[int] = Field(default_factory=lambda: [1, 5, 10])
    seed: int = 42
    resume: bool = True
    test_only: bool = False
    tracking_uri: SecretStr | None = None
    experiment_name: str = "clicktune-qa"
    log_file: Path | None = Field(None, description="None: output_dir/logs/embedding_finetuning.log; else as given (relative to the working directory)")
    progress_file: str = Field("training_progress.json", min_length=1, description="file name under output_dir")
    metrics_file: str = Field("training_metrics.jsonl", min_length=1, description="file name under output_dir")

    @model_validator(mode="before")
    @classmethod
    def _one_spelling_per_key(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = canonical_keys(values)
        loss = values.get("loss")
        if isinstance(loss, str):
            values["loss"] = next((name for name in LOSS_NAMES if name.lower() == loss.lower()), loss)
        return values

    @field_validator("recall_at_k")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k <= 0 for k in ks):
            raise ValueError("recall_at_k needs positive integers")
        return sorted(set(ks))

    @model_validator(mode="after")
    def _save_on_evaluation(self) -> Self:
        if self.eval_steps and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError(f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps})")
        return self

    @classmethod
    def from_json(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Self:
        """Read ``path`` (if given), then apply the non-``None`` ``overrides``; validates both."""
        values: dict[str, Any] = canonical_keys(json.loads(Path(path).read_text())) if path else {}
        values.update(canonical_keys({key: value for key, value in (overrides or {}).items() if value is not None}))
        return cls.model_validate(values)

    @property
    def checkpoints_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def final_model_dir(self) -> Path:
        return self.output_dir / "final_model"

    @property
    def log_path(self) -> Path:
        """``log_file`` when given, else ``output_dir/logs/embedding_finetuning.log``: the
        documented name, kept per run so concurrent runs (worker tasks) never share a log."""
        return self.log_file if self.log_file is not None else self.output_dir / DEFAULT_LOG_FILE

    def public_params(self) -> dict[str, str]:
        """Fields safe to record (MLflow params, progress file): no secrets, values as strings."""
        dumped = self.model_dump(mode="json", exclude={"tracking_uri"})
        return {key: json.dumps(value) if not isinstance(value, str) else value for key, value in dumped.items()}

    def training_fingerprint(self) -> dict[str, Any]:
        """The fields that must not change between a run and its resumption."""
        return self.model_dump(
            mode="json",
            include={"base_model", "max_seq_length", "epochs", "max_steps", "train_batch_size", "learning_rate",
                     "train_split", "loss", "negatives_per_pair", "answer_text", "seed", "warmup_steps",
                     "warmup_ratio", "eval_steps", "save_steps"},
        )
