"""What identifies an item at its source.

A search result in the clickstream carries ``object_id`` and a ``meta`` dict; ``meta`` holds whatever the
configured loader needs to find the item (a file path, an S3 bucket/key, a GCS blob, a row id). The loader
config may provide defaults (a key template such as ``"docs/{object_id}.json"``), so ``meta`` may be empty
and the object id alone identifies the item.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ItemMeta(BaseModel):
    """An item reference: ``object_id`` plus source location fields (``location``).

    Location keys understood by the built-in loaders:

    - local files: ``path`` (relative to the loader's ``root_dir``)
    - S3: ``bucket`` (optional, defaults to the config's bucket), ``key``
    - GCS: ``bucket`` (optional), ``blob``
    - PostgreSQL: ``id`` (defaults to ``object_id``)

    Keys a loader does not understand are ignored, so a search result's ``meta`` can be passed as is.
    """

    model_config = ConfigDict(frozen=True)

    object_id: str
    location: dict[str, Any] = Field(default_factory=dict)

    @field_validator("object_id", mode="before")
    @classmethod
    def _id_as_str(cls, value: Any) -> str:
        if value is None or (isinstance(value, str) and not value):
            raise ValueError("object_id must be a non-empty value")
        return str(value)

    @classmethod
    def from_search_result(cls, object_id: str | int, meta: Mapping[str, Any] | None = None) -> "ItemMeta":
        """Build the reference from a clickstream search result (``object_id`` and its ``meta``)."""
        return cls(object_id=object_id, location=dict(meta or {}))

    def get(self, key: str, default: Any = None) -> Any:
        """A location field, or ``default`` when the search result did not carry it."""
        value = self.location.get(key)
        return default if value is None or value == "" else value
