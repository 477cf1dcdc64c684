"""``clicktune images-optimize``: adapt an image embedding backbone to labelled images.

Images come from ``--images-dir`` (``<class>/<file>`` folders) or ``--digits`` (scikit-learn's
load_digits); with ``--digits`` and no ``--backbone-dir`` a small CNN is pre-trained first
(the demo). Writes the optimized model, calibration, class mapping and report under
``--output-dir`` and prints the report summary as JSON.

``clicktune images-quick-fixes --database DIR`` applies ``ModelOptimizer.apply_quick_fixes`` to
a Chroma collection of labelled image embeddings (metric + normalisation choice and a fitted
confidence calibration, no training) and prints what changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def images_optimize(
    output_dir: Path = typer.Option(..., "--output-dir", "--output_dir"),
    backbone_dir: Optional[Path] = typer.Option(None, "--backbone-dir", "--backbone_dir", help="weights directory (ours, HF CLIP, timm)"),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", "--images_dir", help="<class>/<image> folders"),
    digits: bool = typer.Option(False, "--digits", help="use sklearn load_digits as the labelled set"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "--batch_size"),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--learning_rate"),
    loss: Optional[str] = typer.Option(None, "--loss", help="supcon | batch_hard_triplet"),
    calibration: Optional[str] = typer.Option(None, "--calibration", help="logistic | isotonic"),
    no_resume: bool = typer.Option(False, "--no-resume", "--no_resume"),
) -> None:
    """Contrastive fine-tuning + similarity metric choice + confidence calibration + report."""
    from pydantic import ValidationError

    from finetuning.images import ImageOptimizerConfig, load_backbone, load_digits_dataset, load_image_folder, optimize_images
    from finetuning.images.digits import build_pretrained_digits_backbone

    if digits == (images_dir is not None):
        typer.echo("error: give exactly one of --images-dir or --digits", err=True)
        raise typer.Exit(code=2)
    if backbone_dir is None:
        if not digits:
            typer.echo("error: --backbone-dir is required with --images-dir", err=True)
            raise typer.Exit(code=2)
        backbone_dir = build_pretrained_digits_backbone(output_dir / "pretrained_backbone")
    if digits:
        data = load_digits_dataset()
    else:
        backbone = load_backbone(backbone_dir)
        data = load_image_folder(images_dir, image_size=backbone.image_size, channels=backbone.in_channels)  # type: ignore[arg-type]
    overrides = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "loss": loss,
                 "calibration": calibration, "resume": False if no_resume else None}
    try:
        config = ImageOptimizerConfig(backbone_dir=backbone_dir, output_dir=output_dir,
                                      **{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        from worker.lifecycle.errors import describe_validation_error

        typer.echo(f"error: {describe_validation_error(error)}", err=True)  # fields and reasons, not values
        raise typer.Exit(code=2) from error
    report = optimize_images(config, data).report
    summary = {key: report[key] for key in ("chosen_metric", "test_top1_before", "test_top1_after", "sizes", "model_dir")}
    summary["ece_before"], summary["ece_after"] = report["calibration"]["ece_before"], report["calibration"]["ece_after"]
    summary["report"] = str(output_dir / "report.json")
    typer.echo(json.dumps(summary, indent=2))


def images_quick_fixes(
    database: Path = typer.Option(..., "--database", help="persistent Chroma directory"),
    collection_name: str = typer.Option("ir_embeddings", "--collection-name", "--collection_name"),
    model: Optional[Path] = typer.Option(None, "--model", help="backbone directory (default: the one recorded in the collection)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "--output_dir", help="also write the report here"),
) -> None:
    """No-training fixes for a labelled image search: best metric, normalisation, calibration."""
    from finetuning.images import ModelOptimizer

    try:
        optimizer = ModelOptimizer.create_optimizer(str(database), str(model) if model else None, collection_name,
                                                    config={"output_dir": str(output_dir)} if output_dir else None)
    except (ValueError, OSError) as error:  # no model recorded, unreadable weights
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error
    except Exception as error:  # Chroma's "collection does not exist" (its error types vary by client)
        typer.echo(f"error: cannot open collection {collection_name!r} in {database}: {error}", err=True)
        raise typer.Exit(code=2) from error
    fixes = optimizer.apply_quick_fixes()
    if output_dir:
        optimizer.generate_optimization_report()
        fixes["report"] = str(output_dir / "optimization_report.json")
    typer.echo(json.dumps(fixes, indent=2))


def register(app: typer.Typer) -> None:
    """Add ``images-optimize`` and ``images-quick-fixes`` to the main app."""
    app.command("images-optimize")(images_optimize)
    app.command("images-quick-fixes")(images_quick_fixes)
