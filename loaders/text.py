"""Item data → the text a text model embeds (used by training and reindexing)."""

from __future__ import annotations

from typing import Any, Sequence

from loaders.downloaded_item import DownloadedItem

DEFAULT_TEXT_FIELDS = ("title", "text")


def item_to_text(item: DownloadedItem | Any, fields: Sequence[str] | None = None, separator: str = ". ") -> str:
    """The text of an item.

    - ``str`` → itself; ``bytes`` → UTF-8 decoded.
    - ``dict`` (a JSON document) → the values of ``fields`` that are present and non-empty, joined by
      ``separator``; by default ``("title", "text")`` ("title. text", as BEIR corpora are embedded), and
      when a document has neither, all its non-empty string values in key order. A title that already
      ends with punctuation is not given a second one.
    - anything else (an image) → ``TypeError``.

    Accepts a :class:`DownloadedItem` or its ``data`` directly.
    """
    data = item.data if isinstance(item, DownloadedItem) else item
    if isinstance(data, str):
        return data
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    if isinstance(data, dict):
        chosen = list(fields) if fields is not None else [f for f in DEFAULT_TEXT_FIELDS if f in data]
        if fields is None and not chosen:
            chosen = [key for key, value in data.items() if isinstance(value, str) and not key.startswith("_")]
        parts = [str(data[f]).strip() for f in chosen if data.get(f) not in (None, "")]
        text = ""
        for part in parts:
            if not part:
                continue
            if text:
                text += (" " if text[-1] in ".!?:;" and separator.startswith(".") else separator) + part
            else:
                text = part
        return text
    item_id = getattr(item, "id", "?")
    raise TypeError(f"item {item_id!r} holds {type(data).__name__}, which has no text")
