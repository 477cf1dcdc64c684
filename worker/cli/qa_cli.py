"""``clicktune qa-train``: fine-tune a text embedding model on Q&A pairs from a JSONL file.

Flags override the JSON config (``--config``, clicktune's or the documented key names such as
``num_epochs`` / ``loss_function``); both ``--input_jsonl`` and ``--input-jsonl`` spellings are
accepted. Prints the run summary as JSON; exit code 2 on unusable input.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer


def qa_train(
    config: Optional[Path] = typer.Option(None, "--config", help="JSON config file (QATrainingConfig fields)"),
    input_jsonl: Optional[Path] = typer.Option(None, "--input_jsonl", "--input-jsonl", help="Q&A pairs, one JSON object a line"),
    output_dir: Optional[Path] = typer.Option(None, "--output_dir", "--output-dir"),
    base_model: Optional[str] = typer.Option(None, "--base_model", "--base-model", help="local dir or packaged model name"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch_size", "--batch-size", help="train and eval batch size"),
    learning_rate: Optional[float] = typer.Option(None, "--learning_rate", "--learning-rate"),
    loss: Optional[str] = typer.Option(None, "--loss", "--loss_function", "--loss-function", help="MultipleNegativesRankingLoss | ContrastiveLoss | CosineSimilarityLoss | OnlineContrastiveLoss"),
    save_steps: Optional[int] = typer.Option(None, "--save_steps", "--save-steps", help="checkpoint every N steps"),
    eval_steps: Optional[int] = typer.Option(None, "--eval_steps", "--eval-steps"),
    max_steps: Optional[int] = typer.Option(None, "--max_steps", "--max-steps"),
    test_only: bool = typer.Option(False, "--test_only", "--test-only", help="only evaluate output_dir/final_model (or the base model)"),
    no_resume: bool = typer.Option(False, "--no_resume", "--no-resume", help="ignore existing checkpoints and start over"),
) -> None:
    """Fine-tune (or with --test_only evaluate) a sentence-transformers model on Q&A pairs."""
    from finetuning.qa import QATrainingConfig, run_qa

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        "input_jsonl": input_jsonl, "output_dir": output_dir, "base_model": base_model, "epochs": epochs,
        "train_batch_size": batch_size, "eval_batch_size": batch_size, "learning_rate": learning_rate,
        "loss": loss, "save_steps": save_steps, "eval_steps": eval_steps, "max_steps": max_steps,
        "test_only": True if test_only else None, "resume": False if no_resume else None,
    }
    try:
        settings = QATrainingConfig.from_json(config, overrides)
        result = run_qa(settings)
    except ValueError as error:  # an invalid config (ValidationError), QADataError, QAResumeMismatch
        from pydantic import ValidationError

        from worker.lifecycle.errors import describe_validation_error

        # a ValidationError's own text repeats the rejected values: name the fields and reasons only
        shown = describe_validation_error(error) if isinstance(error, ValidationError) else error
        typer.echo(f"error: {shown}", err=True)
        raise typer.Exit(code=2) from error
    summary = result.to_dict()
    summary["invalid_lines"] = summary["invalid_lines"][:20]
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer) -> None:
    """Add ``qa-train`` to the main app."""
    app.command("qa-train")(qa_train)
