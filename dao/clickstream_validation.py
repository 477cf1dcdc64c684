"""Hostile-input checks of clickstream records, before pydantic and before MongoDB see them.

Pydantic checks the *shape* of a record (``dao/clickstream_documents.py``); this module checks every
*value* the engine or MongoDB could not take, so that ingest rejects a record with a reason instead of
raising out of the driver half-way through a chunk:

- **JSON lines** (:func:`parse_jsonl_line`, :func:`iter_jsonl`): each line is decoded on its own
  (invalid UTF-8 → that line is rejected), bounded in size before it is parsed, parsed with a bounded
  nesting depth (the stdlib decoder's ``RecursionError`` on deep nesting is caught per line), with
  ``NaN``/``Infinity`` and repeated keys refused. A bad line never stops the lines after it.
- **Values** (:func:`check_value`): nesting depth; key names (strings only, no NUL, no leading ``$``,
  no ``.``, bounded length); strings (valid Unicode — no lone surrogates — and no NUL: MongoDB stores a
  NUL inside a string but a query for that string then finds nothing); integers within signed 64 bits;
  floats finite; only JSON types (plus ``datetime`` from Python callers).
- **Sizes** (:class:`ClickstreamLimits`): line, whole record, ``search_query`` and each ``meta``.
- **Dates**: ``created_at`` within ``[min_created_at, now + max_future_s]``.

:func:`validate_records` is the public entry point for any front end (CLI import, HTTP API): it
returns the records that passed as pydantic models plus a :class:`Reject` (0-based index, reason) for
every one that did not, and never raises for bad input. ``ClickstreamDAO.ingest`` runs it itself, so
a caller that only wants to store records does not call it first.

Reasons name the field and the rule, never the offending value (it may be huge, binary or secret).

The value checks and :class:`ClickstreamLimits` live in ``dao/clickstream_values.py`` and are
re-exported here.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import IO, Any, Iterable, Iterator, Mapping, NamedTuple

from pydantic import ValidationError

from dao.clickstream_documents import EventRecord, Reject, SessionRecord
from dao.clickstream_values import (
    INT64_MAX,
    INT64_MIN,
    ClickstreamLimits,
    RecordRejected,
    _text_bytes,
    check_value,
    json_size,
    short,
)

__all__ = [
    "INT64_MAX", "INT64_MIN", "ClickstreamLimits", "RecordRejected", "RejectedRecord", "ValidationOutcome",
    "check_created_at", "check_value", "count_jsonl_records", "iter_jsonl", "json_size", "parse_jsonl_line",
    "short", "validate_record", "validate_records", "validation_reason",
]

_BOM = b"\xef\xbb\xbf"


class RejectedRecord(NamedTuple):
    """Stands in an input stream for a line that could not even be parsed: ``ingest`` rejects it at
    its own index with ``reason`` (so record indexes stay aligned with the input)."""

    reason: str


class ValidationOutcome(NamedTuple):
    """What :func:`validate_records` found: ``accepted`` as ``(index, SessionRecord | EventRecord)``
    in input order, ``rejects`` as :class:`Reject` (index, reason) in input order."""

    accepted: list[tuple[int, SessionRecord | EventRecord]]
    rejects: list[Reject]


# ---------------------------------------------------------------------------------------------- lines
def _reject_constant(name: str) -> float:
    raise RecordRejected(f"number {name} is not allowed (numbers must be finite)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RecordRejected(f"key '{short(key)}' appears twice in one object")
            seen.add(key)
    return result


def parse_jsonl_line(raw: bytes, limits: ClickstreamLimits | None = None) -> Any:
    """One JSONL line (bytes, with or without its newline) → the parsed JSON value.

    Raises :class:`RecordRejected` for a line over ``max_line_bytes``, invalid UTF-8, invalid JSON,
    nesting the decoder cannot take, ``NaN``/``Infinity``, an integer literal too long to convert, or
    a key repeated in one object. Values are checked later by :func:`check_value`.
    """
    limits = limits or ClickstreamLimits()
    if len(raw) > limits.max_line_bytes:
        raise RecordRejected(f"line is {len(raw)} bytes, over the limit of {limits.max_line_bytes}")
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecordRejected(f"invalid UTF-8 at byte {error.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecordRejected:
        raise
    except json.JSONDecodeError as error:
        raise RecordRejected(f"invalid JSON: {error.msg} (column {error.colno})") from None
    except RecursionError:
        raise RecordRejected("invalid JSON: nested too deeply for the decoder") from None
    except ValueError as error:  # e.g. an integer literal past the interpreter's digit limit
        raise RecordRejected(f"invalid JSON: {str(error).split('(')[0].strip()[:120]}") from None


def iter_jsonl(
    stream: IO[bytes], limits: ClickstreamLimits | None = None
) -> Iterator[tuple[int, Any]]:
    """``(line_number, value)`` for every non-blank line of a binary stream; ``value`` is the parsed
    JSON or a :class:`RejectedRecord` with the reason. Memory stays bounded by ``max_line_bytes``: an
    over-long line is skipped in pieces, never read whole."""
    limits = limits or ClickstreamLimits()
    number = 0
    while True:
        raw = stream.readline(limits.max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > limits.max_line_bytes and not raw.endswith(b"\n"):
            total = len(raw)
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(2**20)
                total += len(raw)
            yield number, RejectedRecord(f"line is {total} bytes or more, over the limit of {limits.max_line_bytes}")
            continue
        if not raw.strip():
            continue
        try:
            yield number, parse_jsonl_line(raw, limits)
        except RecordRejected as error:
            yield number, RejectedRecord(str(error))


def count_jsonl_records(stream: IO[bytes]) -> int:
    """The number of non-blank lines (what :func:`iter_jsonl` yields), read in binary."""
    return sum(1 for line in stream if line.strip())


# -------------------------------------------------------------------------------------------- records
def _check_sizes(record: dict, size: int, limits: ClickstreamLimits) -> None:
    if size > limits.max_record_bytes:
        raise RecordRejected(f"record is {size} bytes as JSON, over the limit of {limits.max_record_bytes}")
    query = record.get("search_query")
    if query is not None:
        query_size = _text_bytes(query) if isinstance(query, str) else json_size(query)
        if query_size > limits.max_query_bytes:
            raise RecordRejected(f"search_query is {query_size} bytes, over the limit of {limits.max_query_bytes}")
    metas: list[tuple[str, Any]] = [("search_meta", record.get("search_meta")), ("meta", record.get("meta"))]
    for field in ("search_results", "events"):
        children = record.get(field)
        if isinstance(children, list):
            metas.extend(
                (f"{field}.{i}.meta", child.get("meta")) for i, child in enumerate(children) if isinstance(child, dict)
            )
    for where, meta in metas:
        if meta and json_size(meta) > limits.max_meta_bytes:
            raise RecordRejected(f"{where} is over the limit of {limits.max_meta_bytes} bytes")


def check_created_at(moment: datetime, limits: ClickstreamLimits, where: str = "created_at") -> None:
    """``moment`` (UTC-aware) lies within ``[min_created_at, now + max_future_s]``."""
    lowest = limits.min_created_at if limits.min_created_at.tzinfo else limits.min_created_at.replace(tzinfo=timezone.utc)
    if moment < lowest:
        raise RecordRejected(f"{where}: before {lowest.date().isoformat()}")
    if (moment - datetime.now(timezone.utc)).total_seconds() > limits.max_future_s:
        raise RecordRejected(f"{where}: more than {limits.max_future_s:.0f} s in the future")


def validation_reason(error: ValidationError, prefix: str = "") -> str:
    """A pydantic error as a short reason: up to three ``field: message`` parts, no input values."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(p) if isinstance(p, int) else short(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    more = f" (+{error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return prefix + "; ".join(parts) + more


def validate_record(raw: Any, limits: ClickstreamLimits | None = None) -> SessionRecord | EventRecord:
    """One import record (a parsed JSON object, a :class:`RejectedRecord`, or a model) → a
    ``SessionRecord`` (it has ``search_query``/``search_results``) or an ``EventRecord`` (it has
    ``event_id``). Raises :class:`RecordRejected` with the reason. Nested events are checked for
    hostile values here (as part of their record) and against their session by the DAO."""
    limits = limits or ClickstreamLimits()
    if isinstance(raw, RejectedRecord):
        raise RecordRejected(raw.reason)
    if isinstance(raw, (SessionRecord, EventRecord)):
        raw = raw.model_dump(mode="json", exclude_none=False)
    elif isinstance(raw, Mapping) and not isinstance(raw, dict):
        raw = dict(raw)
    if not isinstance(raw, dict):
        raise RecordRejected(f"not a JSON object but {type(raw).__name__}")
    _check_sizes(raw, check_value(raw, limits), limits)
    try:
        if "search_query" in raw or "search_results" in raw:
            record: SessionRecord | EventRecord = SessionRecord.model_validate(raw)
        elif "event_id" in raw:
            record = EventRecord.model_validate(raw)
        else:
            raise RecordRejected("neither a session (search_query) nor an event (event_id)")
    except ValidationError as error:
        raise RecordRejected(validation_reason(error)) from None
    check_created_at(record.created_at, limits)
    return record


def validate_records(records: Iterable[Any], limits: ClickstreamLimits | None = None) -> ValidationOutcome:
    """Validate every record (see :func:`validate_record`); never raises for bad input.

    ``records`` are parsed JSON values (dicts), :class:`RejectedRecord` placeholders for lines that
    did not parse, or ``SessionRecord``/``EventRecord`` models. Indexes are 0-based positions in
    ``records``. This checks each record alone: duplicates against stored data and events against
    their session are checked when storing (``ClickstreamDAO.ingest``).
    """
    limits = limits or ClickstreamLimits()
    outcome = ValidationOutcome([], [])
    for index, raw in enumerate(records):
        try:
            outcome.accepted.append((index, validate_record(raw, limits)))
        except RecordRejected as error:
            outcome.rejects.append(Reject(index, str(error)))
    return outcome
