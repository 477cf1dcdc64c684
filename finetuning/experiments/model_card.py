"""The model card (``README.md`` in the model directory) and the registered version's description.

A fine-tuned model must be usable without this code base, so it says in plain words what it is:
the model it started from, the data it was trained on (:class:`~.provenance.DataSummary`), the
click model and loss, the hyper-parameters, the held-out metrics before/after and the quality gate's
decision. The card is written when the model is logged (what is known then) and written again
when the gate has decided (:meth:`~finetuning.experiments.registry.RegistryMixin.record_decision`).
The front matter follows the Hugging Face model card format, so the directory can be pushed to a
model hub as it is.
"""

from __future__ import annotations

import math
from typing import Mapping

from pydantic import BaseModel, Field

from finetuning.experiments.provenance import DataSummary

#: Base model names of ``base:`` references → their Hugging Face ids (front matter ``base_model``).
HUB_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


class GateOutcome(BaseModel):
    """The quality gate's decision on a registered version."""

    passed: bool
    reason: str


class ModelCard(BaseModel):
    """Everything the card and the version description say."""

    model_line: str
    start_model: str
    task_id: str | None = None
    run_id: str | None = None
    data: DataSummary | None = None
    click_model: str | None = None
    loss: str | None = None
    hyper_parameters: dict[str, str] = Field(default_factory=dict)
    main_metric: str | None = None
    metrics_before: dict[str, float] = Field(default_factory=dict)
    metrics_after: dict[str, float] = Field(default_factory=dict)
    gate: GateOutcome | None = None
    sentence_transformers: bool = True

    @property
    def base_hub_id(self) -> str | None:
        if self.start_model.startswith("base:"):
            return HUB_IDS.get(self.start_model[len("base:"):])
        return None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def metrics_table(before: Mapping[str, float], after: Mapping[str, float]) -> list[str]:
    """Markdown rows ``| metric | start model | this model | change |``."""
    names = sorted(set(before) | set(after))
    if not names:
        return ["(not evaluated yet)"]
    rows = ["| held-out metric | start model | this model | change |", "|---|---|---|---|"]
    for name in names:
        b, a = before.get(name), after.get(name)
        change = f"{a - b:+.4f}" if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) else "n/a"
        rows.append(f"| {name} | {_fmt(b)} | {_fmt(a)} | {change} |")
    return rows


def render_card(card: ModelCard) -> str:
    """The ``README.md`` of the model directory."""
    front = ["---", "library_name: sentence-transformers" if card.sentence_transformers else "library_name: mlflow",
             "pipeline_tag: sentence-similarity", "tags:", "- sentence-transformers", "- feature-extraction",
             "- clicktune", "- click-feedback"]
    if card.base_hub_id:
        front.append(f"base_model: {card.base_hub_id}")
    front.append("---")
    lines = [*front, "", f"# {card.model_line}", "",
             "A text embedding model fine-tuned on search clicks by clicktune: queries and the results users "
             "clicked are pulled together, results they skipped pushed apart.", ""]
    lines += ["## Provenance", "", f"- start model: `{card.start_model}`"]
    if card.task_id:
        lines.append(f"- fine-tuning task: `{card.task_id}`")
    if card.run_id:
        lines.append(f"- MLflow run: `{card.run_id}`")
    lines.append("")
    lines += ["## Training data", ""]
    if card.data is not None:
        d = card.data
        lines += [f"- clickstream batch `{d.batch_id}` (digest `{d.digest[:16]}`)",
                  f"- {d.sessions} sessions, {d.sessions_used} used ({d.train_sessions} for training, "
                  f"{d.held_out_sessions} held out by query), {d.clicks} clicks, {d.queries} distinct queries",
                  f"- items: {d.items_loaded} of {d.items_total} loaded ({d.items_missing} missing) from "
                  f"`{d.items_source}`, snapshot digest `{d.items_digest[:16]}`"]
    else:
        lines.append("- not recorded")
    lines += ["", "## Training", "", f"- click model: `{card.click_model or 'n/a'}` (turns clicks and skips into "
              "per-result relevance)", f"- loss: `{card.loss or 'n/a'}`", "", "Hyper-parameters:", ""]
    lines += [f"- `{k}`: `{v}`" for k, v in sorted(card.hyper_parameters.items())] or ["- n/a"]
    lines += ["", "## Evaluation (held-out sessions)", ""]
    if card.main_metric:
        lines += [f"Main metric: `{card.main_metric}`.", ""]
    lines += metrics_table(card.metrics_before, card.metrics_after)
    if card.gate is not None:
        lines += ["", f"Quality gate: **{'passed' if card.gate.passed else 'not passed'}** — {card.gate.reason}"]
    lines += ["", "## Usage", ""]
    if card.sentence_transformers:
        lines += ["```python", "from sentence_transformers import SentenceTransformer", "",
                  "model = SentenceTransformer(\"path/to/this/directory\")",
                  "embeddings = model.encode([\"a query\", \"an item text\"])", "```", "",
                  "Through MLflow: `mlflow.sentence_transformers.load_model(\"models:/<name>/<version>\")`."]
    else:
        lines += ["```python", "import mlflow, pandas as pd", "",
                  "model = mlflow.pyfunc.load_model(\"models:/<name>/<version>\")",
                  "model.predict(pd.DataFrame({\"text\": [\"a query\"]}), params={\"tower\": \"query\"})", "```"]
    return "\n".join(lines) + "\n"


def version_description(card: ModelCard) -> str:
    """The registered version's description (markdown, shown on its MLflow page)."""
    main = card.main_metric
    lines = []
    if main:
        before, after = card.metrics_before.get(main), card.metrics_after.get(main)
        lines.append(f"**{main}** on held-out sessions: {_fmt(before)} → {_fmt(after)}")
    if card.gate is not None:
        lines.append(f"Quality gate: **{'passed' if card.gate.passed else 'not passed'}** — {card.gate.reason}")
    if card.task_id:
        lines.append(f"Task: `{card.task_id}`; start model: `{card.start_model}`")
    if card.data is not None:
        lines.append(f"Data: {card.data.line()}; data digest `{card.data.digest}`; items digest "
                     f"`{card.data.items_digest}`")
    table = "\n".join(metrics_table(card.metrics_before, card.metrics_after))
    return "\n\n".join([*lines, table]) + "\n"
