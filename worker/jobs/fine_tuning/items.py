"""The items a batch's sessions showed: collect their references, load them, drop what is missing.

Data flow::

    session dicts ──collect_item_refs──▶ {object_id: loader meta} (first meta seen wins)
        ──load_items(loader config)──▶ LoadedItems(contents, missing, failures)   (pages, progress)
        ──drop_missing(inputs)──▶ sessions without the missing results (sessions left empty dropped)

Decisions:

- **Missing items are removed, not fatal.** An item deleted at its source since the search happened
  is removed from every session that showed it (its clicks with it); the displayed ranks of the
  remaining results are kept, because the click model reasons about where the user saw them. The
  task counts them (``items_missing``) and refuses only when nothing usable remains.
- **Transient failures are not "missing".** A failure the loader marks ``transient`` (timeouts, 5xx
  after its own retries) raises :class:`ItemsUnavailable`, an infrastructure error the lifecycle
  retries: training on a subset because of a hiccup would silently change the result.
- **No loader, or an invalid loader config, is bad input** (``TaskRefused``), never retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from finetuning.inputs import FineTuningInput
from loaders.downloaded_item import DownloadedItem, LoadFailure
from worker.lifecycle import TaskRefused
from worker.lifecycle.errors import safe_detail


class ItemsUnavailable(RuntimeError):
    """Items failed transiently (after the loader's retries): retry the task later."""


@dataclass
class LoadedItems:
    """What loading found: the model input per object id, and the permanent failures."""

    contents: dict[str, Any] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [failure.id for failure in self.failures]


def collect_item_refs(sessions: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``object_id -> meta`` of every shown result (ordered by first appearance; first meta wins)."""
    refs: dict[str, dict[str, Any]] = {}
    for session in sessions:
        for result in session.get("search_results") or []:
            refs.setdefault(str(result["object_id"]), dict(result.get("meta") or {}))
    return refs


def create_task_loader(config: Mapping[str, Any]):
    """The loader of a task's ``options.loader``; a missing or invalid config is refused."""
    from pydantic import ValidationError

    from loaders import create_loader

    if not config:
        raise TaskRefused("options.loader is empty: the task must say how to load the items "
                          "(e.g. {\"source\": \"local_file\", \"root_dir\": \"/data/items\"})")
    try:
        return create_loader(dict(config))
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        raise TaskRefused(f"options.loader is invalid: {safe_detail(exc)}") from None


def item_content(item: DownloadedItem, fields: Sequence[str] | None = None) -> Any:
    """What the items tower takes: text for text/JSON items (``item_to_text``), the data otherwise (images)."""
    from loaders.text import item_to_text

    if isinstance(item.data, (str, dict, bytes)):
        return item_to_text(item, fields=fields)
    return item.data


def load_items(loader: Any, refs: Mapping[str, Mapping[str, Any]], *, fields: Sequence[str] | None = None,
               page_size: int = 64, on_page: Callable[[int, int], None] | None = None,
               should_stop: Callable[[], None] | None = None) -> LoadedItems:
    """Load every referenced item in pages. ``on_page(done, total)`` after each page;
    ``should_stop()`` is called before each page (raise from it to stop, e.g. on cancel): pages are
    small so a cancel is seen within about one heartbeat."""
    from loaders.item_meta import ItemMeta

    loaded = LoadedItems()
    ids = list(refs)
    for start in range(0, len(ids), page_size):
        if should_stop is not None:
            should_stop()
        page = ids[start:start + page_size]
        result = loader.load([ItemMeta.from_search_result(i, refs[i]) for i in page])
        transient = [f for f in result.failures if f.transient]
        if transient:
            shown = "; ".join(f"{f.id}: {f.reason}" for f in transient[:3])
            raise ItemsUnavailable(f"{len(transient)} item(s) failed transiently ({shown})")
        loaded.failures.extend(result.failures)
        by_id = result.by_id()
        failed = {f.id for f in result.failures}
        for object_id in page:
            if object_id in by_id:
                loaded.contents[object_id] = item_content(by_id[object_id], fields)
            elif object_id not in failed:
                loaded.failures.append(LoadFailure(object_id, "not returned by the loader"))
        if on_page is not None:
            on_page(min(start + page_size, len(ids)), len(ids))
    return loaded


def drop_missing(inputs: Sequence[FineTuningInput], available: Mapping[str, Any]) -> tuple[list[FineTuningInput], int]:
    """Sessions restricted to ``available`` items; returns (kept sessions, sessions dropped as empty)."""
    kept: list[FineTuningInput] = []
    dropped = 0
    for item in inputs:
        results = [object_id for object_id in item.results if object_id in available]
        if len(results) == len(item.results):
            kept.append(item)
            continue
        if not results:
            dropped += 1
            continue
        shown = set(results)
        ranks = {k: v for k, v in item.ranks.items() if k in shown} if item.ranks else item.ranks
        kept.append(item.model_copy(update={
            "results": results,
            "events": [event for event in item.events if event.object_id in shown],
            "ranks": ranks,
        }))
    return kept, dropped
