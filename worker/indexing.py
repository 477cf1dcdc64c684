"""Building vector-store collections: the one builder used by ``clicktune index`` and the reindex job.

:func:`build_collection` is the whole flow, once: create a collection → for each page of items
(load → embed → upsert) → verify the count → switch the deployment's blue pointer by
compare-and-set → drop the old collection. On any failure before the switch the new collection is
dropped and the blue pointer is left as it was. :func:`build_index` (the first index of a
deployment, or a full rebuild) and :mod:`worker.jobs.reindex_job` (re-embed the blue collection with
another model) differ only in where the pages come from and what they check between pages.

Data flow of one page::

    (object_id, loader meta) ──loader.load──▶ DownloadedItem ──item_to_text──▶ model.encode_items
        ──▶ store.upsert(ids, embeddings, metadatas={"clicktune_meta": json(meta)})

Every item of a collection keeps its loader meta in its metadata (key :data:`ITEM_META_KEY`, a
JSON string: Chroma metadata values must be scalars), and the collection's metadata keeps the
(non-secret) loader config and the model reference (:data:`COLLECTION_LOADER_KEY`,
:data:`COLLECTION_MODEL_KEY`). So a collection alone says how to fetch its items again and which
model embedded them — that is what lets a reindex re-embed it with another model.

A page with an item that cannot be loaded raises :class:`ItemsMissing`: an index is never silently
smaller than its source. Model references are :class:`finetuning.model_ref.ModelRef`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from pydantic import BaseModel, Field

from dao.blue_pointer import DEFAULT_POINTER, BluePointer, BluePointers
from finetuning.model_ref import ModelRef
from worker.vector_store import CollectionNotFound, VectorStore, validate_collection_name

log = logging.getLogger(__name__)

ITEM_META_KEY = "clicktune_meta"
COLLECTION_LOADER_KEY = "clicktune_loader"
COLLECTION_MODEL_KEY = "clicktune_model_ref"
COLLECTION_POINTER_KEY = "clicktune_pointer"
COLLECTION_CREATED_KEY = "clicktune_created_at"

_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]+")


class ItemsMissing(RuntimeError):
    """Some items could not be loaded: the index would be incomplete, so building it stops."""

    def __init__(self, failures: Sequence[Any], total_missing: int | None = None) -> None:
        self.failures = list(failures)
        shown = "; ".join(f"{f.id}: {f.reason}" for f in self.failures[:5])
        more = len(self.failures) - 5
        count = total_missing if total_missing is not None else len(self.failures)
        super().__init__(
            f"{count} item(s) could not be loaded ({shown}{f'; and {more} more' if more > 0 else ''})"
        )

    @property
    def transient(self) -> bool:
        """True when every failure may go away by itself (worth a retry)."""
        return bool(self.failures) and all(getattr(f, "transient", False) for f in self.failures)


def new_collection_name(line: str, model_ref: str) -> str:
    """``<line>-<model token>-<8 hex>``: unique, readable, 3–512 chars of ``[a-zA-Z0-9._-]``."""
    token = ModelRef.parse(model_ref).token
    parts = [_UNSAFE.sub("-", part).strip("-._") or "x" for part in (line[:80], token[:40])]
    name = f"{parts[0]}-{parts[1]}-{uuid.uuid4().hex[:8]}"
    name = re.sub(r"\.{2,}", ".", name)
    if not name[0].isalnum():
        name = "c" + name
    return validate_collection_name(name)


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------

class ItemRef(BaseModel):
    """One item to index: its id and the loader meta that fetches it."""

    object_id: str
    meta: dict[str, Any] = Field(default_factory=dict)


def pages_of(items: Iterable[ItemRef], page_size: int) -> Iterator[list[ItemRef]]:
    page: list[ItemRef] = []
    for item in items:
        page.append(item)
        if len(page) >= page_size:
            yield page
            page = []
    if page:
        yield page


def item_input(item: Any) -> Any:
    """What the model's items tower takes: text for str/dict items, the data itself otherwise (images)."""
    if isinstance(item.data, (str, dict, bytes)):
        from loaders.text import item_to_text

        return item_to_text(item)
    return item.data


def embed_page(model: Any, loader: Any, refs: Sequence[ItemRef], batch_size: int = 64,
               between_batches: Callable[[], None] | None = None):
    """Load and embed one page. Returns ``(ids, embeddings, metadatas)``; raises :class:`ItemsMissing`.

    The page is encoded ``batch_size`` items at a time with ``between_batches()`` called between
    them (raise from it to stop: a cancel is seen within one batch, not one page).
    """
    import torch

    from loaders.item_meta import ItemMeta

    metas = [ItemMeta.from_search_result(ref.object_id, ref.meta) for ref in refs]
    result = loader.load(metas)
    if result.failures:
        raise ItemsMissing(result.failures)
    by_id = result.by_id()
    missing = [ref.object_id for ref in refs if ref.object_id not in by_id]
    if missing:
        from loaders.downloaded_item import LoadFailure

        raise ItemsMissing([LoadFailure(i, "not returned by the loader") for i in missing])
    ids = [ref.object_id for ref in refs]
    inputs = [item_input(by_id[i]) for i in ids]
    parts = []
    for start in range(0, len(inputs), batch_size):
        if start and between_batches is not None:
            between_batches()
        parts.append(model.encode_items(inputs[start:start + batch_size], batch_size=batch_size))
    embeddings = torch.cat(parts) if len(parts) > 1 else parts[0] if parts else model.encode_items([])
    metadatas = [{ITEM_META_KEY: json.dumps(ref.meta, sort_keys=True)} for ref in refs]
    return ids, embeddings, metadatas


def refs_from_page(ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> list[ItemRef]:
    """Collection items (as stored by :func:`embed_page`) back to :class:`ItemRef`."""
    refs = []
    for object_id, metadata in zip(ids, metadatas):
        raw = (metadata or {}).get(ITEM_META_KEY)
        refs.append(ItemRef(object_id=object_id, meta=json.loads(raw) if raw else {}))
    return refs


def collection_metadata(model_ref: str, loader_config: dict[str, Any], pointer_name: str) -> dict[str, Any]:
    return {
        COLLECTION_MODEL_KEY: model_ref,
        COLLECTION_LOADER_KEY: json.dumps(loader_config, sort_keys=True),
        COLLECTION_POINTER_KEY: pointer_name,
        COLLECTION_CREATED_KEY: datetime.now(timezone.utc).isoformat(),
    }


def loader_config_of(store: VectorStore, collection: str, fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    """The loader config a collection was built with (its metadata), else ``fallback``."""
    raw = store.collection_metadata(collection).get(COLLECTION_LOADER_KEY)
    if raw:
        return json.loads(raw)
    if fallback:
        return dict(fallback)
    raise ValueError(f"collection {collection!r} does not say which loader fetches its items")


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------

class CollectionIncomplete(RuntimeError):
    """The new collection does not hold as many items as were meant to be written."""


class CollectionConflict(RuntimeError):
    """The blue pointer moved while the collection was being built; the new collection is dropped."""


@dataclass
class IndexResult:
    pointer: str
    collection: str
    model_ref: str
    item_count: int
    previous_collection: str | None = None
    old_collection_dropped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def build_collection(
    *,
    store: VectorStore,
    pointers: BluePointers,
    pointer_name: str,
    previous: BluePointer | None,
    model: Any,
    model_ref: str,
    loader: Any,
    loader_config: dict[str, Any],
    pages: Iterable[Sequence[ItemRef]],
    expected_count: int | None = None,
    metadata: dict[str, Any] | None = None,
    model_uri: str | None = None,
    reindex_task_id: str | None = None,
    before_page: Callable[[], None] | None = None,
    on_stage: Callable[[str, int], None] | None = None,
) -> IndexResult:
    """Embed ``pages`` into a new collection and make it the blue of ``pointer_name`` (see module docstring).

    ``previous``: the pointer as read before the build (``None`` for a first deployment); the switch
    is a compare-and-set on its collection and model. ``expected_count``: how many items the new
    collection must hold (default: as many as were written). ``before_page()`` runs before every
    page, between the encoding batches of a page, and before the switch (raise from it to stop:
    cancel, a lost lock). ``on_stage(stage,
    items_done)`` reports ``embedding`` after each page, then ``verifying`` and ``dropping old collection``.
    """
    name = new_collection_name(pointer_name, model_ref)
    store.create_collection(name, {**collection_metadata(model_ref, loader_config, pointer_name), **(metadata or {})})
    done = 0
    try:
        for page in pages:
            if before_page is not None:
                before_page()
            ids, embeddings, metadatas = embed_page(model, loader, page, between_batches=before_page)
            store.upsert(name, ids, embeddings, metadatas)
            done += len(ids)
            if on_stage is not None:
                on_stage("embedding", done)
        if on_stage is not None:
            on_stage("verifying", done)
        count = store.count(name)
        expected = done if expected_count is None else expected_count
        if count != expected:
            raise CollectionIncomplete(f"new collection {name} holds {count} items, expected {expected}"
                                       f"{f' (the source {previous.collection})' if previous else ''}")
        if before_page is not None:
            before_page()
        fields: dict[str, Any] = dict(collection=name, model_ref=model_ref, model_uri=model_uri, item_count=count,
                                      loader=loader_config, embedding_dimension=_dimension(model),
                                      reindex_task_id=reindex_task_id)
        if previous is None:
            switched = pointers.create(BluePointer(name=pointer_name, **fields))
        else:
            switched = pointers.switch(pointer_name, previous.collection, expected_model_ref=previous.model_ref,
                                       **fields)
        if not switched:
            raise CollectionConflict(f"deployment {pointer_name!r} was switched by someone else meanwhile")
    except BaseException:
        drop_collection(store, name)
        raise
    dropped = False
    if previous is not None and previous.collection != name:
        if on_stage is not None:
            on_stage("dropping old collection", done)
        dropped = drop_collection(store, previous.collection)
    return IndexResult(pointer_name, name, model_ref, count, previous.collection if previous else None, dropped)


def build_index(
    *,
    store: VectorStore,
    pointers: BluePointers,
    model: Any,
    model_ref: str,
    loader_config: dict[str, Any],
    items: Iterable[ItemRef],
    pointer_name: str = DEFAULT_POINTER,
    page_size: int = 256,
    total: int | None = None,
    model_uri: str | None = None,
    on_page: Callable[[int, int | None], None] | None = None,
    loader_settings: Any = None,
) -> IndexResult:
    """Embed ``items`` into a new collection and make it the blue of ``pointer_name`` (``clicktune index``).

    If the deployment already has a blue collection, the switch is a compare-and-set on it and the
    old collection is dropped after the switch. ``on_page(items_done, total)`` after every page.
    """
    from loaders import create_loader

    def report(stage: str, done: int) -> None:
        if on_page is not None and stage == "embedding":
            on_page(done, total)

    with (create_loader(loader_config, loader_settings) if loader_settings is not None
          else create_loader(loader_config)) as loader:
        return build_collection(
            store=store, pointers=pointers, pointer_name=pointer_name, previous=pointers.get(pointer_name),
            model=model, model_ref=ModelRef.canonical(model_ref), loader=loader, loader_config=loader_config,
            pages=pages_of(items, page_size), model_uri=model_uri, on_stage=report,
        )


def _dimension(model: Any) -> int | None:
    try:
        return int(model.get_embedding_dimension())
    except Exception:
        return None


def drop_collection(store: VectorStore, name: str) -> bool:
    """Delete a collection; a failure is logged, never raised (it runs while another error propagates)."""
    try:
        return store.delete_collection(name)
    except CollectionNotFound:
        return False
    except Exception:
        log.exception("could not drop collection %s", name)
        return False
