"""The data a fine-tuning task trains on, described for MLflow (:class:`~finetuning.experiments.provenance.DataSummary`).

The batch is fingerprinted from its sessions as read (``digest_sessions``), the item snapshot from the
contents the loader returned (``digest_items``), and the loader is named by its ``source`` and where it
reads (credentials in URLs redacted, secret-looking settings left out).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from finetuning.experiments.provenance import DataSummary, digest_items, digest_sessions
from finetuning.redaction import redact

#: Loader settings that say where items live (the rest is tuning or secrets).
_WHERE = ("root_dir", "bucket", "prefix", "endpoint_url", "table", "schema", "collection", "base_url")
_SECRET = re.compile(r"password|secret|token|credential|key", re.I)


def loader_identity(config: Mapping[str, Any]) -> str:
    """``local_file root_dir=/data/items``: the loader's source and location, without secrets."""
    parts = [str(config.get("source", "unknown"))]
    for key in _WHERE:
        if key in config and config[key] not in (None, "") and not _SECRET.search(key):
            parts.append(f"{key}={redact(str(config[key]))}")
    return " ".join(parts)[:500]


def first_pass(sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What must be read from the raw sessions before they are dropped: digest, counts."""
    return {
        "digest": digest_sessions(sessions),
        "sessions": len(sessions),
        "queries": len({str(s.get("search_query")) for s in sessions}),
    }


def summarise(batch_id: str, raw: Mapping[str, Any], *, clicks: int, sessions_used: int, train_sessions: int,
              held_out_sessions: int, items_total: int, contents: Mapping[str, Any], items_missing: int,
              loader_config: Mapping[str, Any]) -> DataSummary:
    """The :class:`DataSummary` of a task (``raw`` from :func:`first_pass`)."""
    return DataSummary(
        batch_id=batch_id, digest=raw["digest"], sessions=raw["sessions"], sessions_used=sessions_used,
        clicks=clicks, queries=raw["queries"], train_sessions=train_sessions, held_out_sessions=held_out_sessions,
        items_total=items_total, items_loaded=len(contents), items_missing=items_missing,
        items_source=loader_identity(loader_config), items_digest=digest_items(contents),
    )
