"""Value checks of clickstream records: the bounds of a record and every value MongoDB or the engine
could not take (nesting depth, key names, Unicode, NUL, 64-bit integers, finite floats, JSON types).

:func:`check_value` walks a parsed record iteratively (hostile depth cannot exhaust the Python stack)
and returns its size as compact JSON; :class:`ClickstreamLimits` holds the bounds. Record-level
checks (JSON lines, sizes of fields, dates, pydantic) are in ``dao/clickstream_validation.py``.
Reasons name the field and the rule, never the offending value.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Iterable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class ClickstreamLimits(BaseSettings):
    """Bounds of one imported record (environment ``CLICKTUNE_CLICKSTREAM_<FIELD>``).

    ======================  =========  =========================================================
    field                   default    what
    ======================  =========  =========================================================
    ``max_line_bytes``      1 MiB      one JSONL line (UTF-8 bytes, before parsing)
    ``max_record_bytes``    1 MiB      one record as compact JSON (session with its events)
    ``max_query_bytes``     8 KiB      ``search_query`` (a string's UTF-8 bytes, or an object's JSON)
    ``max_meta_bytes``      16 KiB     each ``meta`` / ``search_meta`` object as JSON
    ``max_depth``           32         nesting of objects/arrays in a record (the record is level 1)
    ``max_key_bytes``       256        one object key (UTF-8 bytes)
    ``min_created_at``      1970-01-01 earliest ``created_at``
    ``max_future_s``        86400      how far ``created_at`` may lie ahead of the clock (skew)
    ======================  =========  =========================================================

    MongoDB's own bounds are 16 MiB per document and 100 nesting levels: the defaults stay far below.
    """

    model_config = SettingsConfigDict(env_prefix="CLICKTUNE_CLICKSTREAM_", extra="ignore")

    max_line_bytes: int = Field(2**20, ge=256, le=15 * 2**20)
    max_record_bytes: int = Field(2**20, ge=256, le=15 * 2**20)
    max_query_bytes: int = Field(8 * 2**10, ge=16)
    max_meta_bytes: int = Field(16 * 2**10, ge=16)
    max_depth: int = Field(32, ge=4, le=90)
    max_key_bytes: int = Field(256, ge=8, le=4096)
    min_created_at: datetime = datetime(1970, 1, 1, tzinfo=timezone.utc)
    max_future_s: float = Field(86400.0, ge=0)


_UNBOUNDED = ClickstreamLimits.model_construct(max_depth=10**6, max_key_bytes=10**9)  # sizes of checked values


class RecordRejected(ValueError):
    """A record (or line) that cannot be stored; ``str()`` is the reason."""


# --------------------------------------------------------------------------------------------- values
def short(name: Any, limit: int = 64) -> str:
    """A key or id for a reason: escaped (non-ASCII, control characters and surrogates as ``\\x..``
    escapes) and bounded, so a reason is printable and short whatever the input."""
    text = ascii(name)[1:-1] if isinstance(name, str) else ascii(name)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _path(node: tuple | None, limit: int = 160) -> str:
    """The dotted path of a walk node (``(key, parent_node)`` links, root = None)."""
    parts: list[Any] = []
    while node is not None:
        parts.append(node[0])
        node = node[1]
    text = ".".join(str(p) if isinstance(p, int) else short(p) for p in reversed(parts)) or "record"
    return text if len(text) <= limit else text[: limit // 2 - 1] + "…" + text[-(limit // 2):]


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (a lone surrogate)"
    return None


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def check_value(value: Any, limits: ClickstreamLimits | None = None) -> int:
    """Raise :class:`RecordRejected` when ``value`` holds anything MongoDB or the engine cannot take
    (see the module docstring); else return its size as compact JSON in bytes (string escapes not
    counted). Iterative, so hostile depth cannot exhaust the Python stack; paths for reasons are
    built only when something is wrong."""
    limits = limits or ClickstreamLimits()
    if not isinstance(value, (dict, list)):
        return _check_other(value, None, [], 0)
    max_depth, max_key = limits.max_depth, limits.max_key_bytes
    size = 0
    stack: list[tuple[Any, tuple | None, int]] = [(value, None, 1)]
    while stack:
        container, node, depth = stack.pop()
        if depth > max_depth:
            raise RecordRejected(f"{_path(node)}: nested deeper than {max_depth} levels")
        is_dict = isinstance(container, dict)
        size += 2 + max(len(container) - 1, 0)
        items: Iterable[tuple[Any, Any]] = container.items() if is_dict else enumerate(container)
        for key, child in items:
            if is_dict:
                if key.__class__ is not str and not isinstance(key, str):
                    raise RecordRejected(f"{_path(node)}: key '{short(key)}' is not a string")
                if not (key.isascii() and len(key) <= max_key and "\x00" not in key and "." not in key
                        and not key.startswith("$")):
                    problem = _key_problem(key, limits)
                    if problem:
                        raise RecordRejected(f"{_path(node)}: key '{short(key)}' {problem}")
                size += _text_bytes(key) + 3
            kind = child.__class__
            if kind is str:
                if "\x00" in child or not child.isascii():
                    problem = _string_problem(child)
                    if problem:
                        raise RecordRejected(f"{_path((key, node))}: string {problem}")
                    size += len(child.encode("utf-8")) + 2
                else:
                    size += len(child) + 2
            elif kind is dict or kind is list:
                stack.append((child, (key, node), depth + 1))
            elif kind is bool or child is None:
                size += 5
            elif kind is int:
                if not INT64_MIN <= child <= INT64_MAX:
                    raise RecordRejected(f"{_path((key, node))}: integer outside the signed 64-bit range")
                size += len(repr(child))
            elif kind is float:
                if not math.isfinite(child):
                    raise RecordRejected(f"{_path((key, node))}: number is not finite")
                size += len(repr(child))
            else:
                size += _check_other(child, (key, node), stack, depth)
    return size


def _check_other(child: Any, node: tuple, stack: list, depth: int) -> int:
    """Subclasses of the JSON types and datetimes (Python callers); anything else is refused."""
    if isinstance(child, bool):
        return 5
    if isinstance(child, str):
        problem = _string_problem(child)
        if problem:
            raise RecordRejected(f"{_path(node)}: string {problem}")
        return _text_bytes(child) + 2
    if isinstance(child, (dict, list)):
        stack.append((child, node, depth + 1))
        return 0
    if isinstance(child, int):
        if not INT64_MIN <= child <= INT64_MAX:
            raise RecordRejected(f"{_path(node)}: integer outside the signed 64-bit range")
        return len(repr(int(child)))
    if isinstance(child, float):
        if not math.isfinite(child):
            raise RecordRejected(f"{_path(node)}: number is not finite")
        return len(repr(float(child)))
    if isinstance(child, datetime):
        return 32
    raise RecordRejected(f"{_path(node)}: {type(child).__name__} is not a JSON value")


def _key_problem(key: str, limits: ClickstreamLimits) -> str | None:
    problem = _string_problem(key)
    if problem:
        return problem
    if key.startswith("$"):
        return "starts with '$' (reserved by MongoDB)"
    if "." in key:
        return "contains '.' (a path separator in MongoDB)"
    if len(key.encode("utf-8")) > limits.max_key_bytes:
        return f"is longer than {limits.max_key_bytes} bytes"
    return None


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON, as :func:`check_value` counts them (string escapes not
    counted); ``value`` must have passed :func:`check_value`."""
    if isinstance(value, str):
        return _text_bytes(value) + 2
    if isinstance(value, (dict, list)):
        return check_value(value, _UNBOUNDED)
    return _check_other(value, None, [], 0)
