"""Rows (dicts of fields) → one normalised text per item.

``FieldsNormalizer(["title", "text"])(row)`` joins the present, non-empty fields with
``separator``, collapses whitespace and optionally lower-cases. Missing fields are skipped, so
loaders with different schemas feed the same model input.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping, Sequence

_WHITESPACE = re.compile(r"\s+")


class FieldsNormalizer:
    def __init__(self, fields: Sequence[str] = ("title", "text"), separator: str = ". ", lowercase: bool = False) -> None:
        if not fields:
            raise ValueError("at least one field is needed")
        self.fields = list(fields)
        self.separator = separator
        self.lowercase = lowercase

    def normalise_value(self, value: Any) -> str:
        text = unicodedata.normalize("NFKC", str(value))
        text = _WHITESPACE.sub(" ", text).strip()
        return text.lower() if self.lowercase else text

    def __call__(self, row: Mapping[str, Any] | str) -> str:
        if isinstance(row, str):
            return self.normalise_value(row)
        parts = [self.normalise_value(row[f]) for f in self.fields if row.get(f) not in (None, "")]
        return self.separator.join(p for p in parts if p)
