"""Hyper-parameters of one fine-tuning run and the settings of a whole iteration.

Both are plain pydantic models of JSON-able values (names instead of callables), so they
validate on construction and round-trip through MLflow params, which come back as strings:

    FineTuningParams.from_mlflow_params(run.data.params) == params
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ExamplesType(str, Enum):
    """Which sessions feed training: all, only those with clicks, or only those marked irrelevant."""

    all_examples = "all_examples"
    positive_examples = "positive_examples"
    negative_examples = "negative_examples"


class _MlflowRoundTrip(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    def to_mlflow_params(self) -> dict[str, str]:
        """Every field as a JSON string (MLflow stores params as strings)."""
        dumped = self.model_dump(mode="json")
        return {name: json.dumps(value) for name, value in dumped.items()}

    @classmethod
    def from_mlflow_params(cls, params: dict[str, str]) -> Self:
        """Inverse of :meth:`to_mlflow_params`; keys that are not fields of this model are ignored."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            if name in params:
                raw = params[name]
                try:
                    values[name] = json.loads(raw)
                except (TypeError, json.JSONDecodeError):
                    values[name] = raw
        return cls.model_validate(values)


class FineTuningParams(_MlflowRoundTrip):
    """Hyper-parameters searched by hyperopt (the seed's fields, validated)."""

    num_fixed_layers: int = Field(0, ge=0)
    # 4e-5, twice sentence-transformers' usual 2e-5: a batch holds batch_size distinct *queries* (all
    # their sessions), so an epoch of clicks has fewer steps than an epoch of pairs, and positives
    # carry click-model weights below 1. Measured on SciFact (bench/quality.py, 23 steps, linear
    # decay): 2e-5 gained +0.012 test nDCG@10, 4e-5 +0.017 (best weights at step 10).
    query_lr: float = Field(4e-5, gt=0)
    items_lr: float = Field(4e-5, gt=0)
    query_weight_decay: float = Field(0.0, ge=0)
    items_weight_decay: float = Field(0.0, ge=0)
    margin: float = Field(0.1, ge=0)
    not_irrelevant_only: bool = True
    negative_downsampling: float = Field(0.5, gt=0, le=1)
    min_abs_difference_threshold: float = Field(0.0, ge=0)
    max_abs_difference_threshold: float = Field(1.0, gt=0)
    examples_order: list[ExamplesType] = Field(default_factory=lambda: [ExamplesType.all_examples])
    temperature: float = Field(0.05, gt=0, description="softmax temperature of the contrastive loss")
    false_negative_margin: float | None = Field(
        None, ge=0, description="drop another query's in-batch item as a negative when the model scores it within "
        "this cosine margin of the positive (a likely false negative; None: keep all)"
    )
    negatives_above_last_click_only: bool = Field(
        True, description="skipped results count as negatives only when ranked above the session's last click"
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Self:
        if self.min_abs_difference_threshold >= self.max_abs_difference_threshold:
            raise ValueError("min_abs_difference_threshold must be below max_abs_difference_threshold")
        return self

    def id(self) -> str:
        """A stable short hash of the values (used as MLflow run name)."""
        import hashlib

        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class FineTuningSettings(_MlflowRoundTrip):
    """What stays fixed across the runs of one iteration. Names resolve to objects in ``finetuning``."""

    loss_func: str = "click_infonce"
    # retrieval: held-out queries ranked against the shared pool (the keeper's main metric);
    # retrieval_own_results: each against its own shown results (val_own_*, the quality gate's judge);
    # retrieval_randomized: exploration sessions only (val_rand_*; when the log has enough of them it is
    # the figure that chooses the weights and judges the gate, finetuning.metrics.held_out.judge_metric)
    metric_calculators: list[str] = Field(
        default_factory=lambda: ["distance_shift", "retrieval", "retrieval_own_results", "retrieval_randomized"])
    ranker: str = "cosine"
    is_similarity: bool = True
    # click_relevance: P(relevant) from a two-class click model fitted by EM (finetuning/click_relevance.py).
    # Measured on SciFact (bench/quality.py, seeds 0/1/2): +0.0331/+0.0315/+0.0187 test nDCG@10 against
    # +0.0174/+0.0212/+0.0122 with position_bias (pooled inverse propensity), whose weights gave
    # stray deep clicks as much weight as relevant results (docs/engine.md).
    confidence_calculator: str = "click_relevance"
    step_size: int = Field(500, gt=0)
    gamma: float = Field(0.9, gt=0, lt=1)
    lr_decay: Literal["linear", "none"] = Field(
        "linear", description="linear: the learning rate falls linearly to zero over the run (as in "
        "sentence-transformers training), on top of the StepLR; none: StepLR only"
    )
    num_epochs: int = Field(1, gt=0)
    batch_size: int = Field(16, gt=0)
    test_each_n_sessions: float = Field(
        0.25, description="validation interval: <=0 once per epoch, <1 a fraction of an epoch, >=1 sessions"
    )
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: no limit)")
    main_metric: str = "val_ndcg@10"
    higher_is_better: bool = True
    precision: str = Field(
        "32-true", description="Lightning precision of training steps (validation embeds at full precision); "
        "auto: bf16-mixed where the device computes bfloat16 natively, else 32-true"
    )
    attention_dropout: bool = Field(
        True, description="keep the model's attention dropout while training (probabilities recomputed in the "
        "backward pass on a CPU); False: attention without dropout, the fused SDPA kernel, about twice as fast on a CPU"
    )
    seed: int = 42
    gradient_clip_val: float | None = Field(1.0, description="gradient norm clipping (None: off)")
    # The burden of proof is on the trained weights: the quality gate's own test and defaults
    # (worker/jobs/fine_tuning/quality_gate.py), so what the keeper keeps is what the gate deploys.
    keep_candidate_z: float = Field(
        1.645, description="the best trained weights replace the start only when held-out queries score them "
        "better by more than this one-sided level (as a normal quantile; Student's t on the paired per-query "
        "differences, finetuning/metrics/paired.py); <= 0: kept unless worse beyond that many standard errors"
    )
    keep_min_queries: int = Field(
        10, ge=2, description="fewest paired held-out queries on which trained weights may prove themselves "
        "better than the start; with fewer the start is kept"
    )
    # 32: sentence-transformers' CachedMNRL default; a gold-pair batch of 32 then runs in one forward
    # (no recomputation). With attention probabilities recomputed (finetuning.models.attention)
    # all-MiniLM-L6-v2 keeps ~50 MB of activations per 256-token document in train mode, so a CPU
    # training process stays near 3 GB (bench/train_throughput.py, docs/engine.md).
    mini_batch_size: int = Field(
        32, ge=1, description="most texts per tower forward with autograd; a batch with more is gradient-cached "
        "(embedded without a graph, loss backpropagated to the embeddings, then re-embedded mini-batch by mini-batch), "
        "so activation memory is bounded by this, not by the number of shown results"
    )
    # 16: a small log (a hundred queries, batches of 32) gave 3-4 optimizer steps an epoch, too few to
    # move the model at a fine-tuning learning rate; smaller batches give more steps for the same
    # compute (every session is still seen once an epoch). Measured on the quality suite (docs/engine.md).
    min_steps_per_epoch: int = Field(
        16, ge=0, description="when an epoch would have fewer optimizer steps, batches hold fewer queries "
        "(down to min_batch_size) so that it has about this many (0: batch_size always)"
    )
    min_batch_size: int = Field(4, ge=1, description="fewest queries (or sessions) a batch shrinks to for min_steps_per_epoch")
    group_sessions_by_query: bool = Field(
        True, description="batch_size counts distinct queries; all sessions of a query share one batch"
    )
