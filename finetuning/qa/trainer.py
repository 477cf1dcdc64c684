"""Fine-tune a sentence-transformers model on Q&A pairs; or only evaluate one (``test_only``).

The run, top to bottom (:func:`run_qa`):

1. read and validate the JSONL (bad lines reported with line number and reason, then skipped);
2. split by question (``train_split``); held-out questions retrieve among all answers;
3. load the base model (local directory or a pip-packaged model, never a download);
4. evaluate it on the held-out pairs (``metrics_before``);
5. train with ``SentenceTransformerTrainer``: checkpoints every ``save_steps`` (or epoch) under
   ``output_dir/checkpoints``, evaluation by the IR evaluator, best checkpoint by ``best_metric``
   (MRR@10 by default) loaded at the end; after an interruption the next run resumes from the
   last *complete* checkpoint (one with a readable ``trainer_state.json``);
6. save the best model to ``output_dir/final_model`` (loadable with ``SentenceTransformer(path)``),
   evaluate it (``metrics_after``), mark ``training_progress.json`` completed, record in MLflow.

GPU: the trainer places the model on CUDA when present and uses bf16/fp16 there.

The run's result and errors are in ``finetuning/qa/outcome.py``; what it prepares before training
(input, base model, resume checkpoint, fingerprint, log file) in ``finetuning/qa/run_setup.py``;
progress and metrics files in ``finetuning/qa/progress.py``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from finetuning.qa.config import QATrainingConfig
from finetuning.qa.data import retrieval_targets, split_pairs
from finetuning.qa.evaluation import build_evaluator, evaluate_model, metric_key
from finetuning.qa.losses import build_loss
from finetuning.qa.outcome import QADataError, QAResumeMismatch, QARunResult
from finetuning.qa.progress import ProgressCallback, ProgressFile, utc_now
from finetuning.qa.run_setup import (
    MAX_REPORTED_INVALID,
    file_sha256,
    invalid_dicts,
    last_complete_checkpoint,
    load_model,
    log_to_file,
    precision_flags,
    read_input,
    resolve_base_model,
)
from finetuning.qa.tracking import MlflowMetricsCallback, MlflowRecorder, tracking_uri

__all__ = [
    "MAX_REPORTED_INVALID", "TEST_RESULTS_FILE", "QADataError", "QARunResult", "QAResumeMismatch",
    "evaluate_existing", "last_complete_checkpoint", "resolve_base_model", "run_qa", "train_qa",
]

logger = logging.getLogger(__name__)

TEST_RESULTS_FILE = "test_results.json"


def run_qa(
    config: QATrainingConfig,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> QARunResult:
    """Train (or, with ``config.test_only``, only evaluate) as described in the module docstring."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    with log_to_file(config.log_path):
        if config.test_only:
            return evaluate_existing(config)
        return train_qa(config, on_progress=on_progress, should_stop=should_stop)


def evaluate_existing(config: QATrainingConfig) -> QARunResult:
    """Held-out metrics of ``output_dir/final_model`` if it exists, else of ``base_model``;
    written to ``output_dir/test_results.json``."""
    read = read_input(config)
    train, held_out = split_pairs(read.pairs, config.train_split, config.seed)
    model_path = config.final_model_dir if config.final_model_dir.is_dir() else resolve_base_model(config.base_model)
    model = load_model(model_path, config.max_seq_length)
    evaluator = build_evaluator(retrieval_targets(held_out, read.pairs, config.answer_text),
                                config.recall_at_k, config.eval_batch_size)
    metrics = evaluate_model(model, evaluator)
    logger.info("test_only %s: %s", model_path, metrics)
    result = QARunResult(
        output_dir=str(config.output_dir), test_only=True, model_path=str(model_path), read_counts=read.counts,
        invalid_lines=invalid_dicts(read.invalid), train_examples=len(train), eval_examples=len(held_out),
        metrics_after=metrics, completed=True,
    )
    (config.output_dir / TEST_RESULTS_FILE).write_text(
        json.dumps({"evaluated_at": utc_now(), **result.to_dict()}, indent=2))
    return result


def train_qa(
    config: QATrainingConfig,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> QARunResult:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    started = time.monotonic()
    read = read_input(config)
    train, held_out = split_pairs(read.pairs, config.train_split, config.seed)
    logger.info("Training examples: %d", len(train))
    logger.info("Validation examples: %d", len(held_out))
    fingerprint = {"data_sha256": file_sha256(Path(config.input_jsonl)), **config.training_fingerprint()}  # type: ignore[arg-type]

    progress = ProgressFile(config.output_dir, config.progress_file)
    checkpoint = last_complete_checkpoint(config.checkpoints_dir) if config.resume else None
    if checkpoint is not None and progress.data.get("fingerprint") not in (None, fingerprint):
        raise QAResumeMismatch(
            f"{config.checkpoints_dir} holds checkpoints of a run with other data or settings; "
            "use another output_dir or resume=false to start over")
    if checkpoint is None:  # a fresh start: forget earlier checkpoints and progress of this directory
        shutil.rmtree(config.checkpoints_dir, ignore_errors=True)
        (config.output_dir / config.metrics_file).unlink(missing_ok=True)
        progress.data = {}
    attempt = int(progress.data.get("attempt", 0)) + 1

    base_path = resolve_base_model(config.base_model)
    model = load_model(base_path, config.max_seq_length)
    evaluator = build_evaluator(retrieval_targets(held_out, read.pairs, config.answer_text),
                                config.recall_at_k, config.eval_batch_size)
    metrics_before = progress.data.get("metrics_before") or evaluate_model(model, evaluator)
    logger.info("held-out before training: %s", metrics_before)

    setup = build_loss(config.loss, model, train, config.answer_text, config.negatives_per_pair, config.seed)
    train_dataset = Dataset.from_dict(setup.columns)
    steps_per_epoch = math.ceil(len(train_dataset) / config.train_batch_size)
    total_steps = config.max_steps if config.max_steps > 0 else steps_per_epoch * config.epochs
    logging_steps = min(config.logging_steps, steps_per_epoch)  # at least one loss line per epoch
    warmup_steps = config.warmup_steps if config.warmup_steps is not None else int(config.warmup_ratio * total_steps)
    by_steps = config.eval_steps is not None or config.save_steps is not None
    eval_steps = config.eval_steps or config.save_steps
    save_steps = config.save_steps or config.eval_steps

    progress.update(
        fingerprint=fingerprint, attempt=attempt, completed=False, training_completed=False, error=None,
        started_at=progress.data.get("started_at") or utc_now(), attempt_started_at=utc_now(), finished_at=None,
        completed_at=None, base_model=config.base_model, base_model_path=str(base_path), epochs=config.epochs,
        num_epochs=config.epochs, loss=config.loss,
        input_jsonl=str(config.input_jsonl), read_counts=read.counts, invalid_lines=invalid_dicts(read.invalid),
        train_examples=len(train), eval_examples=len(held_out), train_rows=len(train_dataset),
        total_steps=total_steps, warmup_steps=warmup_steps, metrics_before=metrics_before,
        resumed_from_checkpoint=str(checkpoint) if checkpoint else None,
        resumed_from_step=int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint else None,
        final_model_path=None, stop_requested=False,
    )

    recorder: MlflowRecorder | None = None
    uri = tracking_uri(config.tracking_uri.get_secret_value() if config.tracking_uri else None)
    if uri:
        recorder = MlflowRecorder(uri, config.experiment_name, run_id=progress.data.get("mlflow_run_id"),
                                  run_name=f"qa-{config.output_dir.name}")
        recorder.log_params({**config.public_params(), "train_examples": str(len(train)),
                             "eval_examples": str(len(held_out))})
        recorder.log_metrics(metrics_before, step=0, prefix="before_")
        progress.update(mlflow_run_id=recorder.run_id)

    best_key = metric_key(config.best_metric)
    callbacks: list[Any] = [ProgressCallback(config.output_dir, progress, attempt, best_key, on_progress, should_stop,
                                             metrics_file=config.metrics_file)]
    if recorder is not None:
        callbacks.append(MlflowMetricsCallback(recorder))

    args = SentenceTransformerTrainingArguments(
        output_dir=str(config.checkpoints_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.train_batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=warmup_steps,
        weight_decay=config.weight_decay,
        eval_strategy="steps" if by_steps else "epoch",
        save_strategy="steps" if by_steps else "epoch",
        eval_steps=eval_steps,
        save_steps=save_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=best_key,
        greater_is_better=True,
        logging_steps=logging_steps,
        batch_sampler=BatchSamplers.NO_DUPLICATES if setup.in_batch_negatives else BatchSamplers.BATCH_SAMPLER,
        seed=config.seed,
        report_to="none",
        disable_tqdm=not sys.stderr.isatty(),
        **precision_flags(),
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=setup.loss, evaluator=evaluator,
        callbacks=callbacks,
    )
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    status = "FAILED"
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        stopped = bool(progress.data.get("stop_requested")) and trainer.state.global_step < trainer.state.max_steps
        result = QARunResult(
            output_dir=str(config.output_dir), test_only=False, model_path="", read_counts=read.counts,
            invalid_lines=invalid_dicts(read.invalid), train_examples=len(train), eval_examples=len(held_out),
            metrics_before=metrics_before, global_step=trainer.state.global_step,
            resumed_from_checkpoint=str(checkpoint) if checkpoint else None,
            best_checkpoint=trainer.state.best_model_checkpoint, stopped=stopped,
            mlflow_run_id=recorder.run_id if recorder else None,
        )
        if stopped:
            logger.info("training stopped on request at step %d", trainer.state.global_step)
            status = "KILLED"
            return result
        model.save(str(config.final_model_dir))
        result.model_path = str(config.final_model_dir)
        result.metrics_after = evaluate_model(model, evaluator)
        result.completed = True
        logger.info("held-out after training: %s", result.metrics_after)
        first_start = datetime.fromisoformat(progress.data["started_at"])
        finished = utc_now()
        progress.update(
            completed=True, training_completed=True, finished_at=finished, completed_at=finished,
            global_step=trainer.state.global_step,
            duration_seconds=(datetime.fromisoformat(finished) - first_start).total_seconds(),
            attempt_duration_seconds=time.monotonic() - started,
            metrics_after=result.metrics_after, final_model_path=str(config.final_model_dir),
            best_checkpoint=trainer.state.best_model_checkpoint,
        )
        if recorder is not None:
            recorder.log_metrics(result.metrics_after, step=trainer.state.global_step, prefix="after_")
            recorder.log_artifacts(config.final_model_dir, "final_model")
            for path in (config.output_dir / config.metrics_file, config.output_dir / config.progress_file, config.log_path):
                recorder.log_artifact(path)
        logger.info("Training completed in %.1f s; final model saved to %s", progress.data["duration_seconds"],
                    config.final_model_dir)
        status = "FINISHED"
        return result
    except Exception as error:
        progress.update(training_completed=False, completed=False, error=f"{type(error).__name__}: {error}")
        logger.exception("training failed")
        raise
    finally:
        if recorder is not None:
            recorder.finish(status)
