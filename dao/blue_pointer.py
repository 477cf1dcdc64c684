"""The blue pointer: which vector-store collection (and which model) serves queries now.

One document per deployment name in ``blue_pointers`` (``_id`` = name, ``"default"`` unless told
otherwise)::

    {_id, collection, model_ref, model_uri, loader, item_count, embedding_dimension,
     version, updated_at, previous_collection, previous_model_ref, reindex_task_id}

``loader`` is the (non-secret) loader config that fetches this deployment's items again; each
item's own loader meta lives in the collection's item metadata.

Readers follow the pointer; writers never edit a live collection: they build a new one and then
:meth:`BluePointers.switch` with a compare-and-set on the collection they started from
(``update_one({_id, collection: expected}, …)``). If someone switched in between, the CAS
matches nothing and returns ``False`` — the caller must drop its new collection, not overwrite.
``version`` increases by one at every switch.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

BLUE_POINTERS_COLLECTION = "blue_pointers"
DEFAULT_POINTER = "default"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class BluePointer(BaseModel):
    """A deployment's current blue collection and model."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(default=DEFAULT_POINTER, alias="_id")
    collection: str
    model_ref: str
    model_uri: str | None = None
    loader: dict[str, Any] = Field(default_factory=dict)
    item_count: int = 0
    embedding_dimension: int | None = None
    version: int = 1
    updated_at: datetime = Field(default_factory=utcnow)
    previous_collection: str | None = None
    previous_model_ref: str | None = None
    reindex_task_id: str | None = None

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class BluePointers:
    """Data access for blue pointers. ``db`` is a pymongo database."""

    def __init__(self, db: Database, collection_name: str = BLUE_POINTERS_COLLECTION) -> None:
        self.collection: Collection = db[collection_name]

    def get(self, name: str = DEFAULT_POINTER) -> BluePointer | None:
        doc = self.collection.find_one({"_id": name})
        return BluePointer.model_validate(doc) if doc else None

    def list(self) -> list[BluePointer]:
        return [BluePointer.model_validate(d) for d in self.collection.find({}).sort("_id", 1)]

    def find_by_model(self, model_ref: str) -> list[BluePointer]:
        """Deployments whose blue model is ``model_ref``."""
        return [BluePointer.model_validate(d) for d in self.collection.find({"model_ref": model_ref}).sort("_id", 1)]

    def create(self, pointer: BluePointer) -> bool:
        """Insert the first pointer of a deployment; ``False`` if the name already has one."""
        try:
            self.collection.insert_one(pointer.to_document())
            return True
        except DuplicateKeyError:
            return False

    def switch(
        self,
        name: str,
        expected_collection: str,
        *,
        collection: str,
        model_ref: str,
        item_count: int,
        model_uri: str | None = None,
        loader: dict[str, Any] | None = None,
        embedding_dimension: int | None = None,
        reindex_task_id: str | None = None,
        expected_model_ref: str | None = None,
    ) -> bool:
        """Compare-and-set: point ``name`` at ``collection`` only if it still points at ``expected_collection``.

        With ``expected_model_ref`` the model must match too. Returns whether the switch happened.
        """
        current = self.get(name)
        query: dict[str, Any] = {"_id": name, "collection": expected_collection}
        if expected_model_ref is not None:
            query["model_ref"] = expected_model_ref
        update: dict[str, Any] = {
            "collection": collection,
            "model_ref": model_ref,
            "model_uri": model_uri,
            "item_count": item_count,
            "embedding_dimension": embedding_dimension,
            "reindex_task_id": reindex_task_id,
            "updated_at": utcnow(),
            "previous_collection": expected_collection,
            "previous_model_ref": current.model_ref if current else None,
        }
        if loader is not None:
            update["loader"] = loader
        result = self.collection.update_one(query, {"$set": update, "$inc": {"version": 1}})
        return bool(result.modified_count or result.matched_count)

    def delete(self, name: str) -> bool:
        return bool(self.collection.delete_one({"_id": name}).deleted_count)
