"""The searcher role of the labelled-image optimizer: a ChromaDB collection of labelled embeddings.

Each entry of the collection is one gallery image: its id, its embedding, and metadata with
``object_class`` (the label). The collection's own metadata carries what a later process needs
to search it consistently: ``model_path`` (the backbone that made the embeddings),
``normalized_embeddings`` and ``clicktune_calibration`` (the fitted confidence curve, JSON).

Connecting: ``SimilaritySearcher(database_path, collection_name)`` opens an embedded
``chromadb.PersistentClient`` at ``database_path``; ``SimilaritySearcher.connect(host, port,
collection_name)`` talks to a Chroma server (``chromadb.HttpClient``); or pass ``client=``.

Similarity from Chroma's distances (:func:`distances_to_similarities`), by the collection's
``hnsw`` space (read from its configuration, else the legacy ``hnsw:space`` metadata, else
Chroma's default ``l2``):

- ``cosine``: distance ``1 − cos`` → similarity ``cos = 1 − d`` (in [−1, 1]);
- ``ip``: distance ``1 − a·b`` → similarity ``a·b = 1 − d``;
- ``l2``: *squared* Euclidean distance → similarity ``1 / (1 + √d)`` (in (0, 1]).

A result's confidence is the calibrated probability that it has the query's class
(:class:`~finetuning.images.calibration.SimilarityCalibrator`, rank-aware), or, before any
calibration, the uncalibrated reading :func:`~finetuning.images.calibration.uncalibrated_confidence`.
``rank`` is 0-based in this module's confidence calls, as the results are enumerated.
``chromadb`` is imported only when a client is opened.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from finetuning.images.calibration import SimilarityCalibrator, uncalibrated_confidence

logger = logging.getLogger(__name__)

LABEL_KEY = "object_class"
MODEL_PATH_KEY = "model_path"
NORMALIZED_KEY = "normalized_embeddings"
CALIBRATION_KEY = "clicktune_calibration"
SPACES = ("cosine", "ip", "l2")
SPACE_TO_METRIC = {"cosine": "cosine", "ip": "dot", "l2": "euclidean"}
METRIC_TO_SPACE = {metric: space for space, metric in SPACE_TO_METRIC.items()}


def distances_to_similarities(distances: Any, space: str) -> np.ndarray:
    """Chroma distances (any shape) → similarities, higher = more similar (see module docstring)."""
    distances = np.asarray(distances, dtype=np.float64)
    if space in ("cosine", "ip"):
        return 1.0 - distances
    if space == "l2":
        return 1.0 / (1.0 + np.sqrt(np.maximum(distances, 0.0)))
    raise ValueError(f"unknown Chroma space {space!r}; expected one of {SPACES}")


def collection_space(collection: Any) -> str:
    """The distance space of a Chroma collection: configuration, else ``hnsw:space`` metadata, else ``l2``."""
    configuration = getattr(collection, "configuration", None) or {}
    hnsw = configuration.get("hnsw") if hasattr(configuration, "get") else None
    if hnsw and hnsw.get("space"):
        return str(hnsw["space"])
    return str((collection.metadata or {}).get("hnsw:space", "l2"))


@dataclass
class SimilarityResult:
    """One search hit. ``metadata`` holds ``rank`` (1-based), ``raw_distance``, ``embedding_id``
    and the entry's stored metadata."""

    image_id: str
    similarity_score: float
    confidence: float
    object_class: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchConfig:
    """``distance_metric`` mirrors the collection's space (``cosine`` | ``euclidean`` |
    ``inner_product``); results under ``confidence_threshold`` are dropped by ``search_similar``."""

    k: int = 5
    confidence_threshold: float = 0.0
    distance_metric: str = "cosine"


def results_from_chroma(chroma_results: Any, space: str, calibrator: SimilarityCalibrator | None) -> list[list[SimilarityResult]]:
    """Every query's hits of a Chroma ``query`` answer, with similarities and confidences."""
    all_ids = chroma_results.get("ids") or []
    all_distances = chroma_results.get("distances") or [[] for _ in all_ids]
    all_metadatas = chroma_results.get("metadatas") or [[{} for _ in ids] for ids in all_ids]
    converted: list[list[SimilarityResult]] = []
    for ids, distances, metadatas in zip(all_ids, all_distances, all_metadatas):
        similarities = distances_to_similarities(distances, space) if len(ids) else np.zeros(0)
        confidences = confidences_for(similarities[None, :], space, calibrator)[0] if len(ids) else np.zeros(0)
        hits = []
        for rank, (entry_id, distance, metadata) in enumerate(zip(ids, distances, metadatas)):
            metadata = dict(metadata or {})
            hits.append(SimilarityResult(
                image_id=str(metadata.get("image_id", entry_id)), similarity_score=float(similarities[rank]),
                confidence=float(confidences[rank]), object_class=str(metadata.get(LABEL_KEY, "unknown")),
                metadata={**metadata, "embedding_id": entry_id, "rank": rank + 1, "raw_distance": float(distance)},
            ))
        converted.append(hits)
    return converted


def confidences_for(similarities: np.ndarray, space: str, calibrator: SimilarityCalibrator | None) -> np.ndarray:
    """``(n, k)`` similarities of ranked hits (column j = rank j + 1 of k) → confidences."""
    similarities = np.asarray(similarities, dtype=np.float64)
    if calibrator is None:
        return uncalibrated_confidence(similarities, space)
    n, k = similarities.shape
    ranks = np.tile(np.arange(1, k + 1), (n, 1))
    return calibrator.confidences(similarities.reshape(-1), ranks.reshape(-1), np.full(n * k, k)).reshape(n, k)


class SimilaritySearcher:
    """Search a Chroma collection of labelled image embeddings; see the module docstring."""

    def __init__(self, database_path: str | Path | None = None, collection_name: str = "ir_embeddings",
                 client: Any = None, config: SearchConfig | None = None) -> None:
        self.database_path = Path(database_path) if database_path is not None else None
        self.collection_name = collection_name
        self.client = client
        self.collection: Any = None
        self.config = config or SearchConfig()
        self.calibrator: SimilarityCalibrator | None = None
        self.is_initialized = False

    # --- connecting -----------------------------------------------------------------------
    @classmethod
    def connect(cls, host: str, port: int = 8000, collection_name: str = "ir_embeddings", ssl: bool = False,
                config: SearchConfig | None = None) -> "SimilaritySearcher":
        """A searcher on a Chroma server (``chromadb.HttpClient``); call :meth:`initialize` next."""
        import chromadb
        from chromadb.config import Settings

        client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=Settings(anonymized_telemetry=False))
        return cls(collection_name=collection_name, client=client, config=config)

    def _client(self) -> Any:
        if self.client is None:
            if self.database_path is None:
                raise ValueError("give database_path (embedded Chroma) or a client (e.g. SimilaritySearcher.connect)")
            import chromadb
            from chromadb.config import Settings

            self.client = chromadb.PersistentClient(path=str(self.database_path),
                                                    settings=Settings(anonymized_telemetry=False))
        return self.client

    def initialize(self, create: bool = False, space: str = "cosine") -> bool:
        """Open the collection (``create=True``: create it with ``space`` when missing) and load
        its stored calibration. Raises when the collection does not exist and ``create`` is false."""
        client = self._client()
        if create:
            self.collection = client.get_or_create_collection(
                self.collection_name, configuration={"hnsw": {"space": space}}, embedding_function=None)
        else:
            self.collection = client.get_collection(self.collection_name, embedding_function=None)
        self.is_initialized = True
        self.calibrator = self._stored_calibrator()
        self._sync_config()
        return True

    def _sync_config(self) -> None:
        self.config.distance_metric = {"cosine": "cosine", "l2": "euclidean", "ip": "inner_product"}[self.space]

    @classmethod
    def build(cls, database_path: str | Path, extractor: Any, images: Sequence[Any], collection_name: str = "ir_embeddings",
              space: str = "cosine") -> "SimilaritySearcher":
        """Create (or replace) a persistent collection holding ``images`` (:class:`LabelledImage`)
        embedded by ``extractor``; records the extractor's ``model_path`` in the collection."""
        searcher = cls(database_path, collection_name)
        vectors = extractor.extract_embeddings([image.image_data for image in images])
        searcher.rebuild([image.id for image in images], vectors, [image.object_class for image in images],
                         space=space, model_path=getattr(extractor, "model_path", None),
                         normalized=bool(getattr(extractor, "normalize", False)))
        return searcher

    # --- collection state -----------------------------------------------------------------
    def _require(self) -> Any:
        if not self.is_initialized or self.collection is None:
            raise RuntimeError("SimilaritySearcher must be initialized before use")
        return self.collection

    @property
    def space(self) -> str:
        return collection_space(self._require())

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._require().metadata or {})

    @property
    def model_path(self) -> str | None:
        return self.metadata.get(MODEL_PATH_KEY) or None

    @property
    def normalized(self) -> bool:
        return bool(self.metadata.get(NORMALIZED_KEY, False))

    def count(self) -> int:
        return int(self._require().count())

    def _stored_calibrator(self) -> SimilarityCalibrator | None:
        stored = (self.collection.metadata or {}).get(CALIBRATION_KEY)
        if not stored:
            return None
        value = json.loads(stored)
        if value.get("space") not in (None, collection_space(self.collection)):
            return None  # fitted on another space's similarities: not applicable
        return SimilarityCalibrator.from_dict(value)

    def _update_metadata(self, **values: Any) -> None:
        """Set collection metadata keys (``None`` removes one); Chroma's ``hnsw:`` keys are left out
        because they cannot be modified (the space lives in the configuration)."""
        collection = self._require()
        metadata = {key: value for key, value in (collection.metadata or {}).items() if not key.startswith("hnsw:")}
        for key, value in values.items():
            if value is None:
                metadata.pop(key, None)
            else:
                metadata[key] = value
        collection.modify(metadata=metadata or None)

    def set_calibration(self, calibrator: SimilarityCalibrator | None) -> None:
        """Use ``calibrator`` for confidences from now on and store it with the collection."""
        self.calibrator = calibrator
        stored = json.dumps({**calibrator.to_dict(), "space": self.space}) if calibrator is not None else None
        self._update_metadata(**{CALIBRATION_KEY: stored})

    def labelled_embeddings(self) -> tuple[list[str], np.ndarray, list[str]]:
        """All entries: ids, embeddings ``(n, dim)`` and classes."""
        stored = self._require().get(include=["embeddings", "metadatas"])
        embeddings = np.asarray(stored["embeddings"], dtype=np.float32)
        classes = [str((metadata or {}).get(LABEL_KEY, "unknown")) for metadata in stored["metadatas"]]
        return list(stored["ids"]), embeddings.reshape(len(stored["ids"]), -1), classes

    def add_embeddings(self, ids: Sequence[str], embeddings: np.ndarray, classes: Sequence[str]) -> int:
        """Upsert entries (in batches of the client's maximum)."""
        collection = self._require()
        embeddings = np.asarray(embeddings, dtype=np.float32)
        step = int(self._client().get_max_batch_size()) if hasattr(self._client(), "get_max_batch_size") else 1000
        for start in range(0, len(ids), step):
            stop = start + step
            collection.upsert(ids=list(ids[start:stop]), embeddings=embeddings[start:stop],
                              metadatas=[{LABEL_KEY: str(label)} for label in classes[start:stop]])
        return len(ids)

    def rebuild(self, ids: Sequence[str], embeddings: np.ndarray, classes: Sequence[str], space: str | None = None,
                model_path: str | Path | None = None, normalized: bool | None = None) -> None:
        """Replace the collection by these entries, in ``space`` (default: the current one, else
        ``cosine``). Entries of another model or space cannot be mixed with new ones, hence a
        rebuild rather than an update; the calibration is dropped (it belongs to the old scores)."""
        client = self._client()
        previous: dict[str, Any] = {}
        try:
            old = client.get_collection(self.collection_name, embedding_function=None)
            previous = {key: value for key, value in (old.metadata or {}).items() if not key.startswith("hnsw:")}
            space = space or collection_space(old)
            client.delete_collection(self.collection_name)
        except Exception:  # no such collection yet (the error type differs between Chroma clients)
            space = space or "cosine"
        previous.pop(CALIBRATION_KEY, None)
        if model_path is not None:
            previous[MODEL_PATH_KEY] = str(model_path)
        if normalized is not None:
            previous[NORMALIZED_KEY] = bool(normalized)
        self.collection = client.create_collection(self.collection_name, configuration={"hnsw": {"space": space}},
                                                   metadata=previous or None, embedding_function=None)
        self.is_initialized = True
        self.calibrator = None
        self._sync_config()
        self.add_embeddings(ids, embeddings, classes)
        logger.info("collection %s rebuilt: %d entries, space %s", self.collection_name, len(ids), space)

    # --- searching ------------------------------------------------------------------------
    def query(self, query_embeddings: np.ndarray, k: int, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """The raw Chroma answer for a batch of queries (ids, distances, metadatas)."""
        collection = self._require()
        return collection.query(query_embeddings=np.asarray(query_embeddings, dtype=np.float32),
                                n_results=max(1, min(k, collection.count())), where=filters,
                                include=["distances", "metadatas"])

    def _calculate_confidence(self, similarity_score: float, rank: int, total_results: int) -> float:
        """Confidence of the hit at 0-based ``rank`` of ``total_results`` with this similarity."""
        if self.calibrator is None:
            return float(uncalibrated_confidence(np.array([similarity_score]), self.space)[0])
        return self.calibrator.confidence(similarity_score, rank + 1, max(total_results, rank + 1))

    def convert_results(self, chroma_results: Any) -> list[list[SimilarityResult]]:
        """Every query's hits, with this collection's space and calibration."""
        return results_from_chroma(chroma_results, self.space, self.calibrator)

    def _convert_chroma_results(self, chroma_results: Any) -> list[SimilarityResult]:
        """The first query's hits (the shape a single-query search returns)."""
        converted = self.convert_results(chroma_results)
        return converted[0] if converted else []

    def search_many(self, query_embeddings: np.ndarray, k: int | None = None,
                    filters: dict[str, Any] | None = None) -> list[list[SimilarityResult]]:
        return self.convert_results(self.query(query_embeddings, k or self.config.k, filters))

    def search_similar(self, query_embedding: np.ndarray, k: int | None = None,
                       filters: dict[str, Any] | None = None) -> tuple[list[SimilarityResult], dict[str, Any]]:
        """The top ``k`` hits of one query (those with confidence ≥ ``config.confidence_threshold``)
        and search metrics (time, count)."""
        started = time.perf_counter()
        hits = self.search_many(np.asarray(query_embedding, dtype=np.float32).reshape(1, -1), k, filters)[0]
        kept = [hit for hit in hits if hit.confidence >= self.config.confidence_threshold]
        return kept, {"search_time_ms": (time.perf_counter() - started) * 1000.0, "results_returned": len(kept),
                      "total_candidates": self.count(), "confidence_scores": [hit.confidence for hit in kept]}
