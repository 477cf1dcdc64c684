"""Clickstream sessions (plain dicts, the clickstream JSONL / Mongo shape) → :class:`FineTuningInput`.

A session dict has ``session_id``, ``search_query``, ``search_results[{object_id, rank, meta}]``,
``events[{object_id, event_type, created_at}]``, ``is_irrelevant`` and ``created_at``. Events may
also be passed separately (``events_by_session``), as the DAO pages them. Results are ordered by
their ``rank`` when every result has one (those ranks are kept); otherwise the list order is the
display order and ``ranks`` is left empty for ``preprocess_inputs`` to compute.
Only events whose type is in ``event_types`` count as positive feedback. A session whose
``search_meta.randomized`` is ``true`` showed its results in a random order (exploration).

A click's dwell time (how long the user stayed on the result) is its ``meta["dwell_seconds"]``
when the service reports it, else the time from the click to the session's next event of any
type; the session's last event has none unless reported.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from finetuning.inputs.input import ClickEvent, FineTuningInput

DEFAULT_EVENT_TYPES = ("click",)


def _timestamp(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _reported_dwell(event: Mapping[str, Any]) -> float | None:
    value = (event.get("meta") or {}).get("dwell_seconds")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _with_dwell(raw_events: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], float, float | None]]:
    """(event, timestamp, dwell seconds) in time order; dwell as the module docstring says."""
    timed = sorted(((e, _timestamp(e.get("created_at"))) for e in raw_events), key=lambda pair: pair[1])
    out = []
    for n, (event, moment) in enumerate(timed):
        dwell = _reported_dwell(event)
        if dwell is None and moment > 0 and n + 1 < len(timed) and timed[n + 1][1] > moment:
            dwell = timed[n + 1][1] - moment
        out.append((event, moment, dwell))
    return out


def _randomized(search_meta: Any) -> bool:
    return isinstance(search_meta, Mapping) and search_meta.get("randomized") is True


def session_to_input(
    session: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]] | None = None,
    event_types: Sequence[str] = DEFAULT_EVENT_TYPES,
) -> FineTuningInput:
    """Convert one session dict (events inline or given) to a :class:`FineTuningInput`."""
    results = list(session.get("search_results") or [])
    with_rank = [r for r in results if r.get("rank") is not None]
    ranks: dict[str, int] | None = None
    if results and len(with_rank) == len(results):
        results.sort(key=lambda r: r["rank"])
        ranks = {}
        for r in results:
            ranks.setdefault(str(r["object_id"]), int(r["rank"]))
    ordered: list[str] = []
    for r in results:
        object_id = str(r["object_id"])
        if object_id not in ordered:
            ordered.append(object_id)
    raw_events = events if events is not None else (session.get("events") or [])
    clicks = [
        ClickEvent(object_id=str(e["object_id"]), event_type=str(e.get("event_type", "click")), created_at=moment, dwell_seconds=dwell)
        for e, moment, dwell in _with_dwell(raw_events)
        if str(e.get("event_type", "click")) in event_types
    ]
    return FineTuningInput(
        session_id=str(session.get("session_id", "")),
        query=session.get("search_query", ""),
        results=ordered,
        events=clicks,
        ranks=ranks,
        timestamp=_timestamp(session.get("created_at")),
        is_irrelevant=bool(session.get("is_irrelevant", False)),
        randomized=_randomized(session.get("search_meta")),
    )


def sessions_to_inputs(
    sessions: Iterable[Mapping[str, Any]],
    events_by_session: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    event_types: Sequence[str] = DEFAULT_EVENT_TYPES,
    drop_empty: bool = True,
) -> list[FineTuningInput]:
    """Convert sessions; with ``drop_empty`` sessions that showed nothing are skipped."""
    out = []
    for session in sessions:
        events = None
        if events_by_session is not None:
            events = events_by_session.get(str(session.get("session_id")), [])
        item = session_to_input(session, events, event_types)
        if drop_empty and not item.results:
            continue
        out.append(item)
    return out
