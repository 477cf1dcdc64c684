"""What the experiments layer writes to and reads from MLflow, shared by its parts.

Names: MLflow metric names may not contain ``@`` (``val_ndcg@10`` is stored as
``val_ndcg_at_10``, :func:`mlflow_metric_name`); string values in search filters are quoted by
:func:`filter_literal`, so a model line with a quote neither breaks nor changes a filter.

The model choice: when an iteration registers its best run, :class:`ModelChoice` — which run, its
quality, and the held-out metrics of the start model and of the chosen weights — is written as tags
on the run and on the model version (:data:`CHOICE_TAGS`), and read back from there; it is never
re-derived from metric histories.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

from finetuning.keeper_verdict import KeeperVerdict

CANDIDATE_ALIAS = "candidate"
BLUE_ALIAS = "blue"
SETTINGS_PREFIX = "settings."

#: Tags of a trained run: held-out metrics (our names) of the start weights and of the kept weights.
TAG_METRICS_BEFORE = "clicktune.metrics_before"
TAG_METRICS_AFTER = "clicktune.metrics_after"
#: Tag of a trained run (and of the chosen version): the best-weights keeper's verdict, which weights
#: the run kept and the paired test behind it (``finetuning.keeper_verdict.KeeperVerdict`` as JSON).
TAG_KEEPER = "clicktune.keeper"
#: Tags of the chosen run and of its model version.
TAG_CHOSEN = "clicktune.chosen"
TAG_CHOSEN_QUALITY = "clicktune.chosen_quality"
TAG_MAIN_METRIC = "clicktune.main_metric"
#: Tag of a trained run (and of the chosen version): the held-out figure its quality is, the one that
#: chose its weights (``finetuning.metrics.held_out.judge_metric``; the main metric or a twin of it).
TAG_QUALITY_METRIC = "clicktune.quality_metric"
#: Metric of a finished run that ranks the runs of an iteration: the run's quality, whatever figure
#: it is (the tag above names it; ``best.<that figure>`` holds the same value under its own name).
QUALITY_METRIC = "quality"
#: Artifact of a trained run: each held-out metric per query, of the start and of the kept weights.
PER_QUERY_ARTIFACT = "evaluation/held_out_per_query.json"

_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


def mlflow_metric_name(name: str) -> str:
    """Our metric name in MLflow's alphabet: ``val_ndcg@10`` → ``val_ndcg_at_10``."""
    return _METRIC_UNSAFE.sub("_", name.replace("@", "_at_"))


def filter_literal(value: str) -> str:
    """``value`` as a string literal of an MLflow search filter.

    MLflow's filter parser takes the text between the outer quotes verbatim (no escapes), so a value
    with ``'`` is written in double quotes and one with ``"`` in single quotes; a value with both
    cannot be written (``ValueError``; task options refuse such names at enqueue).
    """
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both quote characters: it cannot appear in an MLflow search filter")


class IterationNotStarted(RuntimeError):
    """A run-level call was made before :meth:`ExperimentsManager.start_iteration`."""


class RunNotStarted(RuntimeError):
    """A run-level call was made outside ``start_run`` … ``finish_run``."""


class NoModelLogged(RuntimeError):
    """A run has no logged model, or an iteration no finished run with one."""


@dataclass(frozen=True)
class FinishedRun:
    """A FINISHED run of the current iteration with the same parameters (a trial to skip)."""

    run_id: str
    quality: float | None


@dataclass(frozen=True)
class ModelChoice:
    """The run an iteration chose, as recorded when it was chosen."""

    run_id: str
    quality: float | None
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    #: the held-out figure ``quality`` is (None: the main metric, as recorded before runs named it)
    quality_metric: str | None = None
    #: which weights the run kept and why (None: not recorded)
    keeper: KeeperVerdict | None = None

    def tags(self, main_metric: str) -> dict[str, str]:
        """The tags that record this choice (on the run and on the model version)."""
        keeper = {TAG_KEEPER: self.keeper.to_json()} if self.keeper is not None else {}
        return {
            **keeper,
            TAG_CHOSEN: "true",
            TAG_MAIN_METRIC: main_metric,
            TAG_QUALITY_METRIC: self.quality_metric or main_metric,
            TAG_CHOSEN_QUALITY: "" if self.quality is None else repr(self.quality),
            TAG_METRICS_BEFORE: metrics_json(self.metrics_before),
            TAG_METRICS_AFTER: metrics_json(self.metrics_after),
        }

    @classmethod
    def from_tags(cls, run_id: str, tags: Mapping[str, str], quality: float | None = None) -> "ModelChoice":
        """Read a choice (or a trained run's evaluation) back from its tags."""
        raw = tags.get(TAG_CHOSEN_QUALITY)
        return cls(run_id, float(raw) if raw else quality, metrics_from_json(tags.get(TAG_METRICS_BEFORE)),
                   metrics_from_json(tags.get(TAG_METRICS_AFTER)),
                   tags.get(TAG_QUALITY_METRIC) or tags.get(TAG_MAIN_METRIC) or None,
                   KeeperVerdict.from_json(tags.get(TAG_KEEPER)))


class IterationOutcome(NamedTuple):
    """What ``finish_iteration`` registered; unpacks as ``(run_id, model_uri, name, version, choice)``."""

    run_id: str
    model_uri: str
    name: str
    version: str
    choice: ModelChoice


def metrics_json(metrics: Mapping[str, float] | None) -> str:
    """Finite metrics as compact JSON (a tag value)."""
    clean = {k: float(v) for k, v in (metrics or {}).items() if v is not None and math.isfinite(float(v))}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"))


def metrics_from_json(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    try:
        return {str(k): float(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError, TypeError):
        return {}


def per_query_payload(per_query: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> dict:
    """The :data:`PER_QUERY_ARTIFACT` document: each metric per held-out query, start and kept weights."""
    return {"metrics": {name: {"before": [float(v) for v in before], "after": [float(v) for v in after]}
                        for name, (before, after) in per_query.items()}}


def per_query_from_payload(payload: object, metric: str) -> tuple[list[float], list[float]] | None:
    """``(before, after)`` of ``metric`` from a :data:`PER_QUERY_ARTIFACT` document; None unless the
    document has that metric's values and they pair up (same length, finite)."""
    try:
        values = payload["metrics"][metric]  # type: ignore[index]
        before = [float(v) for v in values["before"]]
        after = [float(v) for v in values["after"]]
    except (KeyError, TypeError, ValueError):
        return None
    if not before or len(before) != len(after) or not all(math.isfinite(v) for v in before + after):
        return None
    return before, after
