"""Query the blue collection of a deployment: embed a text with the blue model, return the top k.

One :class:`Searcher` per process (the API holds one; ``clicktune search`` builds one per call).
It follows the blue pointer (:mod:`dao.blue_pointer`) at every call — one indexed ``find_one`` —
and keeps the blue model in memory: the model is loaded once and swapped when the pointer moves to
another model (a reindex switched blue). Loading happens under a lock, so concurrent requests
during a swap wait for one load instead of loading the model several times; requests keep using
the old model until the new one is ready.

    searcher = Searcher(settings)
    response = searcher.search(SearchRequest(query="protein folding", k=5))
    [hit.object_id for hit in response.results]
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo.database import Database

from dao.blue_pointer import BluePointer, BluePointers
from dao.mongo import mongo_database
from finetuning.model_ref import ModelRef
from worker.indexing import ITEM_META_KEY
from worker.settings import Settings, get_settings
from worker.vector_store import VectorStore, create_vector_store

log = logging.getLogger(__name__)

MAX_K = 100
MAX_QUERY_CHARS = 4096


class NoBlueDeployment(LookupError):
    """The deployment has no blue pointer yet (nothing was indexed)."""


class SearchRequest(BaseModel):
    """A text query against a deployment's blue collection."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The search text.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many results.")
    deployment: str | None = Field(None, min_length=1, max_length=200,
                                   description="Blue pointer name (default: the service's).")


class SearchHit(BaseModel):
    """One result: the item id, its cosine distance (smaller is closer) and its loader meta."""

    object_id: str
    distance: float
    rank: int
    meta: dict[str, Any] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    """Results best first, with the deployment state that produced them."""

    deployment: str
    collection: str
    model_ref: str
    version: int
    results: list[SearchHit]
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Where the time went: pointer "
                                         "(blue look-up), model (load, when blue moved), encode, query (vector store).")


@dataclass
class _Loaded:
    model_ref: str
    model: Any


class Searcher:
    """Blue-collection search for one process. Thread-safe."""

    def __init__(self, settings: Settings | None = None, *, db: Database | None = None,
                 store: VectorStore | None = None) -> None:
        self.settings = settings or get_settings()
        self.db = db if db is not None else mongo_database(self.settings.mongo_url, self.settings.mongo_db)
        self.pointers = BluePointers(self.db)
        self._store = store
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        # every encode runs on this one thread: torch's OpenMP pool belongs to the calling thread,
        # and a server's request threads would each start (and spin) their own
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clicktune-encode")

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            self._store = create_vector_store(self.settings)
        return self._store

    def pointer(self, deployment: str | None = None) -> BluePointer:
        name = deployment or self.settings.blue_pointer_name
        pointer = self.pointers.get(name)
        if pointer is None:
            raise NoBlueDeployment(f"deployment {name!r} has no blue collection yet (index one first)")
        return pointer

    def model_for(self, pointer: BluePointer) -> Any:
        """The loaded model of ``pointer`` (loading it, once, when blue moved to another model)."""
        loaded = self._loaded
        if loaded is not None and loaded.model_ref == pointer.model_ref:
            return loaded.model
        with self._load_lock:
            loaded = self._loaded
            if loaded is None or loaded.model_ref != pointer.model_ref:
                log.info("loading blue model %s", pointer.model_ref)
                model = ModelRef.parse(pointer.model_ref).load(self.settings.mlflow_tracking_uri, device="cpu")
                self._loaded = loaded = _Loaded(pointer.model_ref, model)
            return loaded.model

    @property
    def loaded_model_ref(self) -> str | None:
        return self._loaded.model_ref if self._loaded else None

    def ensure_ready(self, deployment: str | None = None) -> BluePointer | None:
        """Load the blue model now (readiness); ``None`` when there is no blue deployment yet."""
        try:
            pointer = self.pointer(deployment)
        except NoBlueDeployment:
            return None
        self.model_for(pointer)
        return pointer

    def search(self, request: SearchRequest) -> SearchResponse:
        clock = _Clock()
        pointer = self.pointer(request.deployment)
        clock.lap("pointer")
        model = self.model_for(pointer)
        clock.lap("model")
        vector = self._encoder.submit(_encode, model, request.query).result()
        clock.lap("encode")
        found = self.store.query(pointer.collection, vector, k=request.k)
        clock.lap("query")
        metadatas = found.metadatas[0] if found.metadatas else [{} for _ in found.ids[0]]
        hits = [
            SearchHit(object_id=object_id, distance=float(distance), rank=rank, meta=_item_meta(meta))
            for rank, (object_id, distance, meta) in enumerate(zip(found.ids[0], found.distances[0], metadatas), 1)
        ]
        return SearchResponse(deployment=pointer.name, collection=pointer.collection, model_ref=pointer.model_ref,
                              version=pointer.version, results=hits, timings_ms=clock.laps)


def _encode(model: Any, query: str) -> Any:
    import torch

    with torch.inference_mode():
        return model.encode_queries([query]).detach().cpu().numpy()


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round((now - self._last) * 1000, 3)
        self._last = now


def _item_meta(metadata: dict[str, Any] | None) -> dict[str, Any]:
    raw = (metadata or {}).get(ITEM_META_KEY)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class BlueIndexRanker:
    """The deployment's search as a :class:`finetuning.simulation.rankers.Ranker`: simulated users see
    exactly what the service would show them (the blue model, the blue collection), and the simulation
    costs one query encoding per query instead of a second encoding of the corpus."""

    name = "blue-index"

    def __init__(self, searcher: Searcher, deployment: str | None = None) -> None:
        self.searcher = searcher
        self.deployment = deployment

    def rank_many(self, queries: list[str], top_k: int) -> list[list[tuple[str, float]]]:
        ranked = []
        for query in queries:
            response = self.searcher.search(SearchRequest(query=query, k=min(top_k, MAX_K), deployment=self.deployment))
            ranked.append([(hit.object_id, 1.0 - hit.distance) for hit in response.results])
        return ranked
