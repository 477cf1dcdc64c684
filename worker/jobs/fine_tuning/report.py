"""The per-task report: a PNG with the best run's training/validation curves, before/after metrics
and the quality gate's decision with its figures.

Curves come from the run's metric history in MLflow (``train_loss`` and ``lr`` per optimizer step,
every ``val_*`` metric by step; step 0 is the start model); the before/after bars carry their values, so the report shows what was actually logged.
The figure is drawn with matplotlib's Agg backend (no display) and logged as an artifact of the
best run: ``report/fine_tuning_report.png``. A report is a convenience: the job logs a failure to
build it and goes on.
"""

from __future__ import annotations

import math
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Mapping

from finetuning.experiments.mlflow_manager import mlflow_metric_name

ARTIFACT_DIR = "report"
FILE_NAME = "fine_tuning_report.png"
ARTIFACT_PATH = f"{ARTIFACT_DIR}/{FILE_NAME}"


def metric_histories(client: Any, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """``{mlflow metric name: [(step, value), ...]}`` of a run, in the order they were logged."""
    run = client.get_run(run_id)
    histories: dict[str, list[tuple[int, float]]] = {}
    for name in run.data.metrics:
        points = sorted(client.get_metric_history(run_id, name), key=lambda m: (m.timestamp, m.step))
        histories[name] = [(int(m.step), float(m.value)) for m in points]
    return histories


def render_report(path: str | Path, histories: Mapping[str, list[tuple[int, float]]], *,
                  main_metric: str, metrics_before: Mapping[str, float], metrics_after: Mapping[str, float],
                  title: str, note: str | None = None) -> Path:
    """Draw the report PNG at ``path``: training loss, validation curves, before/after bars; ``note``
    (the quality gate's decision) is written under them."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, (loss_ax, val_ax, bar_ax) = plt.subplots(1, 3, figsize=(15, 4.5))
    # train_loss and lr are logged at every optimizer step (step = optimizer steps done)
    train = histories.get("train_loss", [])
    if train:
        loss_ax.plot([s for s, _ in train], [v for _, v in train], marker="." if len(train) < 50 else None,
                     label="train_loss")
        lr = histories.get("lr", [])
        if lr:
            lr_ax = loss_ax.twinx()
            lr_ax.plot([s for s, _ in lr], [v for _, v in lr], color="tab:orange", linestyle=":", label="lr (right axis)")
            lr_ax.legend(loc="upper right", fontsize=8)
        loss_ax.legend(loc="upper left", fontsize=8)
    else:
        loss_ax.text(0.5, 0.5, "no training loss logged", ha="center", transform=loss_ax.transAxes)
    loss_ax.set_title("training loss per step")
    loss_ax.set_xlabel("optimizer step")

    main_key = mlflow_metric_name(main_metric)
    for name, points in sorted(histories.items()):
        if not name.startswith("val_") or name == "val_loss" or not points:
            continue
        style = {"linewidth": 2.5} if name == main_key else {"linewidth": 1, "alpha": 0.7}
        val_ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=name, **style)
    val_loss = histories.get("val_loss", [])
    if val_loss:
        loss_twin = val_ax.twinx()
        loss_twin.plot([s for s, _ in val_loss], [v for _, v in val_loss], color="grey", linestyle="--",
                       marker="x", label="val_loss (right axis)")
        loss_twin.legend(loc="lower right", fontsize=8)
    val_ax.set_title("held-out metrics (step 0 = start model)")
    val_ax.set_xlabel("step")
    if val_ax.lines:
        val_ax.legend(loc="best", fontsize=8)

    names = [n for n in metrics_after if n in metrics_before and n != "val_loss"
             and not math.isnan(metrics_before[n]) and not math.isnan(metrics_after[n])]
    xs = range(len(names))
    for offset, values, label in ((-0.2, metrics_before, "start model"), (0.2, metrics_after, "candidate")):
        bars = bar_ax.bar([x + offset for x in xs], [values[n] for n in names], width=0.4, label=label)
        bar_ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    bar_ax.margins(y=0.15)
    bar_ax.set_xticks(list(xs))
    bar_ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    bar_ax.set_title("before / after")
    bar_ax.legend(loc="best")
    figure.suptitle(title)
    if note:
        figure.text(0.5, 0.01, textwrap.fill(note, 180), ha="center", va="bottom", fontsize=8)
    figure.tight_layout(rect=(0, 0.08 if note else 0, 1, 1))
    path = Path(path)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def log_report(client: Any, run_id: str, *, main_metric: str, metrics_before: Mapping[str, float],
               metrics_after: Mapping[str, float], title: str, note: str | None = None) -> str:
    """Render the report of ``run_id`` and log it to that run; returns the artifact path."""
    histories = metric_histories(client, run_id)
    with tempfile.TemporaryDirectory(prefix="clicktune-report-") as tmp:
        local = render_report(Path(tmp) / FILE_NAME, histories, main_metric=main_metric,
                              metrics_before=metrics_before, metrics_after=metrics_after, title=title, note=note)
        client.log_artifact(run_id, str(local), artifact_path=ARTIFACT_DIR)
    return ARTIFACT_PATH
