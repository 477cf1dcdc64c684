"""``ItemsSet``: object id → item content (text or PIL image) given by the caller.

The worker loads items through ``loaders`` and passes their content; benches pass a corpus.
``ItemsSet.from_rows`` normalises dict rows with a :class:`FieldsNormalizer`;
``split_long_texts`` replaces long texts by token-aware parts and returns the part → object map
that :class:`FineTuningInput.part_to_object_id` uses.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

from finetuning.inputs.fields import FieldsNormalizer


class ItemsSet(Mapping[str, Any]):
    """Immutable mapping ``object_id -> content`` with batch access (:meth:`rows`)."""

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = {str(k): v for k, v in items.items()}

    @classmethod
    def from_rows(
        cls, rows: Iterable[Mapping[str, Any]], id_field: str = "_id", normalizer: FieldsNormalizer | None = None
    ) -> "ItemsSet":
        normalizer = normalizer or FieldsNormalizer()
        return cls({str(row[id_field]): normalizer(row) for row in rows})

    def __getitem__(self, object_id: str) -> Any:
        return self._items[object_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ids(self) -> list[str]:
        return list(self._items)

    def rows(self, ids: Iterable[str]) -> list[Any]:
        """Contents of ``ids`` in order; raises KeyError naming the first unknown id."""
        out = []
        for object_id in ids:
            if object_id not in self._items:
                raise KeyError(f"item {object_id!r} is not in the items set")
            out.append(self._items[object_id])
        return out

    def subset(self, ids: Iterable[str]) -> "ItemsSet":
        return ItemsSet({i: self._items[i] for i in ids if i in self._items})

    def split_long_texts(self, splitter) -> tuple["ItemsSet", dict[str, str]]:
        """Apply a :class:`~finetuning.inputs.text_splitter.TextSplitter`; returns (parts set, part → object)."""
        parts: dict[str, Any] = {}
        part_to_object: dict[str, str] = {}
        for object_id, content in self._items.items():
            for part_id, text in splitter.split(object_id, content):
                parts[part_id] = text
                part_to_object[part_id] = object_id
        return ItemsSet(parts), part_to_object
