"""Turn a BEIR data set into search sessions with clicks, in the clickstream JSONL import format.

For every judged query of a split: rank the corpus (a :class:`~finetuning.simulation.rankers.Ranker`,
BM25 by default), show the top k, and let a click model (position-based by default; any
:class:`~finetuning.simulation.click_model.ClickModel`, see ``registry.py``) click, in as many
sessions as the query's popularity gives it (``sessions_per_query`` each by default, or a
:class:`~finetuning.simulation.popularity.QueryPopularity` such as a Zipf law). Each
session is one JSON-ready dict::

    {"session_id", "search_query", "created_at", "user_id", "is_irrelevant",
     "search_results": [{"object_id", "rank", "meta"}],             # rank is 1-based
     "search_meta": {"source": "click_simulator", "dataset", "split", "query_id", ...,
                     "randomized": true},                            # only in exploration sessions
     "events": [{"event_id", "object_id", "event_type": "click", "created_at"}]}

Decisions:
- Split hygiene: only ``"train"`` is simulated by default; any other split (``"test"``, ``"dev"``)
  raises :class:`HeldOutSplitError` unless ``allow_test=True``. ``search_meta`` records the split
  and query id, so a consumer can always tell which query a session came from.
- ``is_irrelevant`` is True exactly when the simulated user clicked nothing: that is what a real
  service can observe (a user who gives up), whereas "no relevant result shown" is oracle
  knowledge a production system never has.
- Determinism: each session draws from its own generator seeded by ``(seed, query id, session
  index)``, and a query's session count from one keyed by ``(seed, query id)``, so a session
  (clicks, times, user) does not change when other queries are added or removed; ids are
  UUID5s of the simulation parameters, so re-running the same simulation yields the same ids
  (a re-import is idempotent) and different simulations never collide.
- Exploration (``randomize_share``): in that share of sessions the service shows its top k in a
  uniformly random order and says so (``search_meta.randomized``), as a search service does on a
  small slice of traffic to learn what its own ranking hides (RandTop-k; Wang et al. 2016,
  "Learning to Rank with Selection Bias in Personal Search"; Joachims et al. 2017, "Unbiased
  Learning-to-Rank with Biased Feedback"). Which sessions explore and their order come from a
  generator of their own, so ``randomize_share=0`` leaves every session as it was.
- ``meta`` of a result is ``meta_template`` with every ``{object_id}`` in its strings (at any
  depth) replaced by the document id, so the same simulation can point at local files
  (``{"path": "{object_id}.json"}``), S3 keys or PostgreSQL rows.
"""

from __future__ import annotations

import json
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from finetuning.datasets.beir import BeirDataset
from finetuning.simulation.bm25 import BM25Ranker
from finetuning.simulation.click_model import ClickModel, PositionBasedClickModel
from finetuning.simulation.dwell import DwellTimeModel
from finetuning.simulation.popularity import QueryPopularity
from finetuning.simulation.rankers import Ranker

DEFAULT_META_TEMPLATE: dict[str, Any] = {"path": "{object_id}.json"}
TRAIN_SPLIT = "train"
DEFAULT_START_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)
SPREAD_SECONDS = 7 * 24 * 3600  # sessions start at random moments within a week of start_time
_NAMESPACE = uuid.UUID("6f1c7f5e-3f0b-4c39-9d53-8a2f4c0f2b11")


class HeldOutSplitError(ValueError):
    """Raised when sessions would be simulated from held-out (test) queries without ``allow_test``."""


def check_split(split: str, allow_test: bool = False) -> None:
    """Raise :class:`HeldOutSplitError` for any split but ``"train"`` unless ``allow_test``."""
    if split != TRAIN_SPLIT and not allow_test:
        raise HeldOutSplitError(
            f"refusing to simulate clicks for held-out split {split!r}: training must never see its "
            "queries (allow_test=True / --allow-test is for evaluation or demos only)"
        )


def render_meta(template: Any, object_id: str) -> Any:
    """``template`` with ``{object_id}`` replaced in every string, at any depth of dicts/lists."""
    if isinstance(template, str):
        return template.replace("{object_id}", object_id)
    if isinstance(template, Mapping):
        return {key: render_meta(value, object_id) for key, value in template.items()}
    if isinstance(template, (list, tuple)):
        return [render_meta(value, object_id) for value in template]
    return template


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _query_rng(seed: int, query_id: str, session_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(query_id.encode("utf-8")), session_index])


def _display_order(shown: list[str], randomize_share: float, seed: int, query_id: str,
                   session_index: int) -> tuple[list[str], bool]:
    """The order a session shows ``shown`` in, and whether it was randomized (exploration)."""
    if not randomize_share:
        return shown, False
    rng = np.random.default_rng([seed, zlib.crc32(query_id.encode("utf-8")), session_index, 1])
    if rng.random() >= randomize_share:
        return shown, False
    return [shown[i] for i in rng.permutation(len(shown))], True


def simulate_sessions(
    dataset: BeirDataset,
    split: str = TRAIN_SPLIT,
    ranker: Ranker | None = None,
    top_k: int = 10,
    sessions_per_query: int = 1,
    seed: int = 0,
    click_model: ClickModel | None = None,
    query_ids: Sequence[str] | None = None,
    meta_template: Any = None,
    allow_test: bool = False,
    start_time: datetime = DEFAULT_START_TIME,
    n_users: int = 1000,
    on_query: Callable[[int], None] | None = None,
    popularity: QueryPopularity | None = None,
    dwell: DwellTimeModel | None = None,
    randomize_share: float = 0.0,
) -> list[dict]:
    """Simulate ``sessions_per_query`` sessions for each judged query of ``split``.

    Args:
        dataset: the BEIR data set (its qrels decide which results are relevant).
        split: the split whose queries are used; anything but ``"train"`` needs ``allow_test``.
        ranker: the search engine (default: BM25 over ``dataset``'s documents).
        top_k: results shown per session.
        sessions_per_query: independent sessions (fresh click draws, same result list) per query;
            leave at 1 when ``popularity`` is given.
        seed: makes the whole simulation reproducible.
        click_model: default ``PositionBasedClickModel()`` (1/rank examination, 0.9 / 0.05); any
            :class:`~finetuning.simulation.click_model.ClickModel` (``make_click_model(name)``).
        query_ids: only these queries (each must be judged in ``split``); default all of them.
        meta_template: result ``meta`` template (default ``{"path": "{object_id}.json"}``).
        allow_test: allow a held-out split (evaluation/demo only — never for training data).
        start_time: sessions start at random moments within the week after it.
        n_users: size of the simulated user pool (``user_id``).
        on_query: called with the number of queries done (progress reporting).
        popularity: sessions per query drawn per query id and ``seed`` (e.g.
            ``ZipfPopularity()``: a long tail of queries seen once); default ``None``:
            ``sessions_per_query`` each. Recorded in ``search_meta`` when given.
        dwell: how long the user stays on each clicked result (:class:`DwellTimeModel`): events
            are then spaced by the time to read the list and the dwell on the result clicked
            before, so dwell shows in the timestamps. Default ``None``: clicks 2–30 s apart,
            whatever the result (timestamps carry no relevance). Recorded in ``search_meta``.
        randomize_share: share of sessions (drawn per session) that show the top k in a random
            order, marked ``search_meta["randomized"] = True`` (module docstring). Default 0.

    Returns the sessions in query order, each query's sessions consecutive.
    """
    check_split(split, allow_test)
    if top_k < 1 or sessions_per_query < 1:
        raise ValueError("top_k and sessions_per_query must be >= 1")
    if not 0.0 <= randomize_share <= 1.0:
        raise ValueError("randomize_share must be within [0, 1]")
    if popularity is not None and sessions_per_query != 1:
        raise ValueError("give sessions_per_query or popularity, not both")
    qrels = dataset.qrels(split)
    judged = dataset.query_ids(split)
    if query_ids is not None:
        unknown = [q for q in query_ids if q not in qrels or q not in dataset.queries]
        if unknown:
            raise KeyError(f"query ids not judged in split {split!r}: {unknown[:5]}")
        judged = list(dict.fromkeys(query_ids))
    if not allow_test:
        leaked = [q for q in judged if any(s != TRAIN_SPLIT for s in dataset.split_of(q))]
        if leaked:
            raise HeldOutSplitError(f"queries {leaked[:5]} are also judged in a held-out split")
    click_model = click_model or PositionBasedClickModel()
    ranker = ranker or BM25Ranker(dataset.doc_texts())
    template = DEFAULT_META_TEMPLATE if meta_template is None else meta_template

    rankings = ranker.rank_many([dataset.queries[q] for q in judged], top_k)
    simulation = {
        "source": "click_simulator",
        "dataset": dataset.name,
        "split": split,
        "ranker": getattr(ranker, "name", type(ranker).__name__),
        "top_k": top_k,
        "seed": seed,
        "click_model": click_model.params(),
    }
    if popularity is not None:
        simulation["popularity"] = popularity.params()
    if dwell is not None:
        simulation["dwell"] = dwell.params()
    if randomize_share:
        simulation["randomize_share"] = randomize_share
    simulation_key = json.dumps(simulation, sort_keys=True)
    sessions: list[dict] = []
    for query_number, (query_id, ranking) in enumerate(zip(judged, rankings)):
        relevant = {doc for doc, score in qrels[query_id].items() if score > 0}
        shown = [doc_id for doc_id, _ in ranking[:top_k]]
        n_sessions = sessions_per_query if popularity is None else popularity.sessions(query_id, seed)
        for session_index in range(n_sessions):
            rng = _query_rng(seed, query_id, session_index)
            order, randomized = _display_order(shown, randomize_share, seed, query_id, session_index)
            clicked = click_model.clicks([doc in relevant for doc in order], rng=rng, query_id=query_id, doc_ids=order)
            session_id = str(uuid.uuid5(_NAMESPACE, f"{simulation_key}|{query_id}|{session_index}"))
            created = start_time + timedelta(seconds=int(rng.integers(0, SPREAD_SECONDS)))
            events = []
            moment = created
            stayed = 0.0  # on the previous click's result
            for doc_id, was_clicked in zip(order, clicked):
                if was_clicked:
                    event = {"event_id": f"{session_id}:{len(events)}", "object_id": doc_id, "event_type": "click"}
                    if dwell is None:
                        moment = moment + timedelta(seconds=float(rng.uniform(2.0, 30.0)))
                    else:  # back from the previous result, then reading the list
                        moment = moment + timedelta(seconds=stayed + dwell.scan(rng))
                        stayed = dwell.dwell(doc_id in relevant, rng)
                        if dwell.reported:
                            event["meta"] = {"dwell_seconds": round(stayed, 3)}
                    events.append({**event, "created_at": _iso(moment)})
            sessions.append(
                {
                    "session_id": session_id,
                    "search_query": dataset.queries[query_id],
                    "search_results": [
                        {"object_id": doc_id, "rank": rank, "meta": render_meta(template, doc_id)}
                        for rank, doc_id in enumerate(order, start=1)
                    ],
                    "search_meta": {**simulation, "query_id": query_id, "session_index": session_index,
                                    **({"randomized": True} if randomized else {})},
                    "user_id": f"sim-user-{int(rng.integers(n_users))}",
                    "created_at": _iso(created),
                    "is_irrelevant": not events,
                    "events": events,
                }
            )
        if on_query is not None:
            on_query(query_number + 1)
    return sessions


def write_jsonl(records: Iterable[Mapping[str, Any]], target: str | Path | IO[str]) -> int:
    """Write ``records`` one JSON object a line; returns the count."""
    if isinstance(target, (str, Path)):
        with Path(target).open("w", encoding="utf-8") as handle:
            return write_jsonl(records, handle)
    count = 0
    for record in records:
        target.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        count += 1
    return count


def click_statistics(sessions: Sequence[Mapping[str, Any]], dataset: BeirDataset) -> dict[str, Any]:
    """Summary of simulated sessions: CTR per rank, click precision (share of clicks on judged
    relevant documents of the session's own split), clicks per session, irrelevant share."""
    shown_per_rank: dict[int, int] = {}
    clicks_per_rank: dict[int, int] = {}
    relevant_clicks = clicks = 0
    for session in sessions:
        meta = session["search_meta"]
        judged = dataset.qrels(meta["split"]).get(meta["query_id"], {})
        rank_of = {result["object_id"]: result["rank"] for result in session["search_results"]}
        for rank in rank_of.values():
            shown_per_rank[rank] = shown_per_rank.get(rank, 0) + 1
        for event in session["events"]:
            rank = rank_of[event["object_id"]]
            clicks_per_rank[rank] = clicks_per_rank.get(rank, 0) + 1
            clicks += 1
            relevant_clicks += judged.get(event["object_id"], 0) > 0
    return {
        "sessions": len(sessions),
        "clicks": clicks,
        "clicks_per_session": clicks / len(sessions) if sessions else 0.0,
        "click_precision": relevant_clicks / clicks if clicks else 0.0,
        "irrelevant_share": sum(bool(s["is_irrelevant"]) for s in sessions) / len(sessions) if sessions else 0.0,
        "ctr_by_rank": {rank: clicks_per_rank.get(rank, 0) / shown for rank, shown in sorted(shown_per_rank.items())},
    }
