"""One search session as a training example: :class:`FineTuningInput`.

A session is a query, the results shown (object ids in display order), the events on them
(clicks …), the display rank of **every** shown result, a timestamp and whether the user marked
the whole result list irrelevant. ``part_to_object_id`` maps chunk ids of long items (see
:mod:`finetuning.inputs.text_splitter`) back to their object, so a click on an object counts for
every part of it.

``randomized`` marks an exploration session: the service showed its results in a random order
(``search_meta.randomized`` in the clickstream), so where a result sat says nothing of how the
service ranked it, and clicks there judge results without the service's own order in them.

``ranks`` may be missing (``None`` or empty) when the search backend did not report them;
``EmbeddingsFineTuner.preprocess_inputs`` then computes them with the current model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ClickEvent(BaseModel):
    """An interaction with one shown object (``event_type`` "click" by default). ``dwell_seconds``:
    how long the user stayed on the object after it (None: not observed)."""

    model_config = ConfigDict(extra="ignore")

    object_id: str
    event_type: str = "click"
    created_at: float | None = None
    dwell_seconds: float | None = None


class FineTuningInput(BaseModel):
    """A search session ready for training (see module docstring)."""

    model_config = ConfigDict(extra="ignore")

    session_id: str = ""
    query: Any
    results: list[str] = Field(default_factory=list, description="shown object ids, best first")
    events: list[ClickEvent] = Field(default_factory=list)
    ranks: dict[str, int] | None = Field(None, description="object id → 1-based display rank, every shown result")
    timestamp: float = 0.0
    is_irrelevant: bool = False
    randomized: bool = Field(False, description="the results were shown in a random order (exploration)")
    part_to_object_id: dict[str, str] = Field(default_factory=dict)

    @property
    def clicked_ids(self) -> list[str]:
        """Distinct clicked object ids in order of first click, limited to shown results."""
        shown = set(self.results)
        seen: dict[str, None] = {}
        for event in self.events:
            if event.object_id in shown:
                seen.setdefault(event.object_id, None)
        return list(seen)

    @property
    def click_dwell(self) -> dict[str, float]:
        """Clicked object id → the longest observed dwell of its clicks (objects whose dwell was never
        observed are left out)."""
        shown, dwell = set(self.results), {}
        for event in self.events:
            if event.object_id in shown and event.dwell_seconds is not None:
                dwell[event.object_id] = max(event.dwell_seconds, dwell.get(event.object_id, 0.0))
        return dwell

    @property
    def not_clicked_ids(self) -> list[str]:
        clicked = set(self.clicked_ids)
        return [object_id for object_id in self.results if object_id not in clicked]

    @property
    def has_ranks(self) -> bool:
        return bool(self.ranks) and all(object_id in self.ranks for object_id in self.results)

    def rank(self, object_id: str) -> int:
        """Display rank of a shown object (1 = top); falls back to its list position."""
        if self.ranks and object_id in self.ranks:
            return int(self.ranks[object_id])
        return self.results.index(object_id) + 1

    def last_click_rank(self) -> int:
        """Rank of the lowest clicked result (0 when nothing was clicked)."""
        return max((self.rank(object_id) for object_id in self.clicked_ids), default=0)

    def object_of(self, item_id: str) -> str:
        return self.part_to_object_id.get(item_id, item_id)
