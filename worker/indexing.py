"""Embedding items into vector-store collections: the first index of a deployment, and the shared
page-by-page machinery the reindex job (:mod:`worker.jobs.reindex_job`) uses.

Data flow of one page (the same for ``clicktune index`` and for a reindex)::

    (object_id, loader meta) ──loader.load──▶ DownloadedItem ──item_to_text──▶ model.encode_items
        ──▶ store.upsert(ids, embeddings, metadatas={"clicktune_meta": json(meta)})

Every item of a collection keeps its loader meta in its metadata (key :data:`ITEM_META_KEY`, a
JSON string: Chroma metadata values must be scalars), and the collection's metadata keeps the
(non-secret) loader config and the model reference (:data:`COLLECTION_LOADER_KEY`,
:data:`COLLECTION_MODEL_KEY`). So a collection alone says how to fetch its items again and which
model embedded them — that is what lets a reindex re-embed it with another model.

A page with an item that cannot be loaded raises :class:`ItemsMissing`: an index is never silently
smaller than its source.

Model references are :class:`finetuning.model_ref.ModelRef` (``base:``, ``run:``, ``models:/``, ``dir:``).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class ItemsConfig(BaseModel):
    """What ``clicktune index --items-config`` reads (JSON text or a JSON file).

    ``loader`` is a loader config (``loaders.create_loader``); the items come from exactly one of
    ``items`` (inline), ``items_file`` (JSON lines ``{"object_id", "meta"}``) or
    ``scan_directory: true`` (every file under a ``local_file`` loader's ``root_dir``:
    ``object_id`` = file name without extension, ``meta = {"path": <relative path>}``).
    """

    model_config = ConfigDict(extra="forbid")

    loader: dict[str, Any]
    items: list[ItemRef] | None = None
    items_file: str | None = None
    scan_directory: bool = False
    pattern: str = Field("*", description="Glob for scan_directory.")

    @model_validator(mode="after")
    def _one_source(self) -> "ItemsConfig":
        given = sum([self.items is not None, self.items_file is not None, self.scan_directory])
        if given != 1:
            raise ValueError("give exactly one of items, items_file, scan_directory")
        return self

    @classmethod
    def parse(cls, text_or_path: str) -> "ItemsConfig":
        path = Path(text_or_path)
        if not text_or_path.lstrip().startswith("{") and path.exists():
            text_or_path = path.read_text()
        return cls.model_validate_json(text_or_path)

    def iter_items(self) -> Iterator[ItemRef]:
        if self.items is not None:
            yield from self.items
        elif self.items_file is not None:
            with open(self.items_file) as handle:
                for line in handle:
                    if line.strip():
                        yield ItemRef.model_validate_json(line)
        else:
            root = self.loader.get("root_dir") or self.loader.get("root")
            if not root:
                raise ValueError("scan_directory needs a local_file loader with root_dir")
            base = Path(root)
            for path in sorted(p for p in base.rglob(self.pattern) if p.is_file()):
                relative = path.relative_to(base).as_posix()
                yield ItemRef(object_id=path.stem, meta={"path": relative})


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


def embed_page(model: Any, loader: Any, refs: Sequence[ItemRef], batch_size: int = 64):
    """Load and embed one page. Returns ``(ids, embeddings, metadatas)``; raises :class:`ItemsMissing`."""
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
    embeddings = model.encode_items([item_input(by_id[i]) for i in ids], batch_size=batch_size)
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
# The first index of a deployment
# --------------------------------------------------------------------------------------------

@dataclass
class IndexResult:
    pointer: str
    collection: str
    model_ref: str
    item_count: int
    previous_collection: str | None = None
    old_collection_dropped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


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
    """Embed ``items`` into a new collection and make it the blue of ``pointer_name``.

    If the deployment already has a blue collection, the switch is a compare-and-set on it (a
    concurrent switch makes this fail and the new collection is dropped) and the old collection is
    dropped after the switch. On any error the new collection is removed and nothing is switched.
    ``on_page(items_done, total)`` is called after every page.
    """
    from loaders import create_loader

    model_ref = ModelRef.canonical(model_ref)
    previous = pointers.get(pointer_name)
    name = new_collection_name(pointer_name, model_ref)
    store.create_collection(name, collection_metadata(model_ref, loader_config, pointer_name))
    done = 0
    try:
        loader = create_loader(loader_config, loader_settings) if loader_settings is not None else create_loader(loader_config)
        try:
            for page in pages_of(items, page_size):
                ids, embeddings, metadatas = embed_page(model, loader, page)
                store.upsert(name, ids, embeddings, metadatas)
                done += len(ids)
                if on_page:
                    on_page(done, total)
        finally:
            close = getattr(loader, "close", None)
            if close:
                close()
        count = store.count(name)
        if count != done:
            raise RuntimeError(f"collection {name} holds {count} items, {done} were written (duplicate ids?)")
        dimension = _dimension(model)
        if previous is None:
            switched = pointers.create(BluePointer(
                name=pointer_name, collection=name, model_ref=model_ref, model_uri=model_uri,
                loader=loader_config, item_count=count, embedding_dimension=dimension,
            ))
        else:
            switched = pointers.switch(
                pointer_name, previous.collection, collection=name, model_ref=model_ref, model_uri=model_uri,
                item_count=count, loader=loader_config, embedding_dimension=dimension,
            )
        if not switched:
            raise RuntimeError(f"deployment {pointer_name!r} was switched by someone else meanwhile")
    except BaseException:
        _drop_quietly(store, name)
        raise
    dropped = False
    if previous is not None and previous.collection != name:
        dropped = _drop_quietly(store, previous.collection)
    return IndexResult(pointer_name, name, model_ref, count, previous.collection if previous else None, dropped)


def _dimension(model: Any) -> int | None:
    try:
        return int(model.get_embedding_dimension())
    except Exception:
        return None


def _drop_quietly(store: VectorStore, name: str) -> bool:
    try:
        return store.delete_collection(name)
    except CollectionNotFound:
        return False
    except Exception:
        log.exception("could not drop collection %s", name)
        return False

