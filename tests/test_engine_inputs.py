"""Inputs: converter, splitter, items set, fields normalizer, long-text splitter, augmentation."""

from __future__ import annotations

import random

from finetuning.inputs import FieldsNormalizer, ItemsSet, TextSplitter, TrainTestSplitter, session_to_input, sessions_to_inputs
from finetuning.inputs.augmentation import augment_text
from finetuning.models.registry import load_model


def _session(sid="s1", query="q", results=("a", "b", "c"), clicks=("b",), ranks=True, irrelevant=False):
    return {
        "session_id": sid,
        "search_query": query,
        "search_results": [{"object_id": o, "rank": (r + 1 if ranks else None), "meta": {}} for r, o in enumerate(results)],
        "events": [{"object_id": o, "event_type": "click", "created_at": "2024-01-01T00:00:01Z"} for o in clicks]
        + [{"object_id": "a", "event_type": "view"}],
        "is_irrelevant": irrelevant,
        "created_at": "2024-01-01T00:00:00Z",
    }


def test_converter_keeps_every_rank_and_only_click_events():
    session = _session(results=("a", "b", "c"))
    session["search_results"].reverse()  # stored out of order; rank decides
    item = session_to_input(session)
    assert item.results == ["a", "b", "c"]
    assert item.ranks == {"a": 1, "b": 2, "c": 3}
    assert item.clicked_ids == ["b"] and item.not_clicked_ids == ["a", "c"]
    assert item.last_click_rank() == 2
    assert item.timestamp > 0


def test_converter_leaves_ranks_empty_when_unknown_and_takes_separate_events():
    item = sessions_to_inputs([_session(ranks=False, clicks=())], events_by_session={"s1": [{"object_id": "c"}]})[0]
    assert item.ranks is None and not item.has_ranks
    assert item.clicked_ids == ["c"]
    assert item.rank("c") == 3  # list order as the fallback


def test_splitter_never_shares_a_query_and_keeps_irrelevant_balance():
    sessions = []
    for q in range(40):
        for k in range(3):
            sessions.append(_session(sid=f"{q}-{k}", query=f"Query {q}", irrelevant=q % 4 == 0))
    inputs = sessions_to_inputs(sessions)
    train, test = TrainTestSplitter(test_size=0.25, random_state=1)(inputs)
    assert len(train) + len(test) == len(inputs)
    assert {i.query for i in train}.isdisjoint({i.query for i in test})
    share = lambda xs: sum(i.is_irrelevant for i in xs) / len(xs)
    assert abs(share(train) - share(test)) < 0.1
    assert 0.15 < len(test) / len(inputs) < 0.35
    again = TrainTestSplitter(test_size=0.25, random_state=1)(inputs)
    assert [i.session_id for i in again[1]] == [i.session_id for i in test]


def test_items_set_and_fields_normalizer():
    normalizer = FieldsNormalizer(["title", "text"])
    assert normalizer({"title": "  A   title ", "text": "Body\ttext", "x": 1}) == "A title. Body text"
    assert normalizer({"text": "only"}) == "only"
    items = ItemsSet.from_rows([{"_id": 1, "title": "T", "text": "x"}, {"_id": "b", "text": "y"}])
    assert items.rows(["1", "b"]) == ["T. x", "y"] and len(items) == 2
    try:
        items.rows(["zzz"])
        raise AssertionError("unknown id accepted")
    except KeyError as error:
        assert "zzz" in str(error)


def test_long_text_splitter_maps_parts_back(tiny_model_dir):
    tokenizer = load_model(tiny_model_dir).query_model[0].tokenizer
    splitter = TextSplitter(tokenizer, max_tokens=8, overlap=2)
    long_text = " ".join(["red cat"] * 10)
    parts = list(splitter.split("doc", long_text))
    assert len(parts) > 1 and all(pid.startswith("doc#") for pid, _ in parts)
    assert all(len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 8 for _, text in parts)
    assert list(splitter.split("short", "red cat")) == [("short", "red cat")]
    parts_set, part_to_object = ItemsSet({"doc": long_text, "short": "red"}).split_long_texts(splitter)
    assert set(part_to_object.values()) == {"doc", "short"} and len(parts_set) == len(parts) + 1


def test_augmentation_is_deterministic_and_never_empty():
    text = "one two three four five six"
    a = augment_text(text, random.Random(3), drop_prob=0.5, swap_prob=0.5)
    b = augment_text(text, random.Random(3), drop_prob=0.5, swap_prob=0.5)
    assert a == b and a
    assert augment_text("x y", random.Random(0), drop_prob=1.0) == "x y"
    assert augment_text(text, random.Random(0), drop_prob=1.0) == "one"


def _timed(object_id, second, event_type="click", **meta):
    return {"object_id": object_id, "event_type": event_type, "created_at": f"2024-01-01T00:{second // 60:02d}:{second % 60:02d}Z",
            **({"meta": meta} if meta else {})}


def test_a_click_s_dwell_is_the_time_to_the_next_event_or_what_the_service_reported():
    session = _session(results=("a", "b", "c"), clicks=())
    # events arrive out of order; the view on "c" ends the dwell on "b"; the last click's dwell is unknown
    session["events"] = [_timed("c", 75), _timed("b", 50), _timed("a", 10), _timed("c", 60, event_type="view")]
    item = session_to_input(session)
    assert item.clicked_ids == ["a", "b", "c"]  # in time order
    assert [e.dwell_seconds for e in item.events] == [40.0, 10.0, None]
    assert item.click_dwell == {"a": 40.0, "b": 10.0}

    reported = _session(results=("a", "b"), clicks=())
    reported["events"] = [_timed("a", 10, dwell_seconds=95.5), _timed("b", 20, dwell_seconds=3)]
    assert session_to_input(reported).click_dwell == {"a": 95.5, "b": 3.0}  # the report wins over the gap


def test_a_malformed_dwell_report_is_ignored_not_trusted():
    session = _session(results=("a", "b"), clicks=())
    session["events"] = [_timed("a", 10, dwell_seconds="long"), _timed("b", 40, dwell_seconds=-5)]
    session["events"] += [{**_timed("b", 50), "meta": {"dwell_seconds": float("nan")}}, {**_timed("a", 70), "meta": {"dwell_seconds": True}}]
    item = session_to_input(session)
    assert [e.dwell_seconds for e in item.events] == [30.0, 10.0, 20.0, None]  # gaps, never the bad reports
    assert item.click_dwell == {"a": 30.0, "b": 20.0}  # an object's longest observed visit


def test_an_exploration_session_is_one_whose_search_meta_says_randomized_true():
    shown = {"session_id": "s", "search_query": "q", "search_results": [{"object_id": "a", "rank": 1}, {"object_id": "b", "rank": 2}]}
    assert session_to_input({**shown, "search_meta": {"randomized": True}}).randomized
    for meta in (None, {}, {"randomized": "true"}, {"randomized": 1}, "randomized", ["randomized"]):
        assert not session_to_input({**shown, "search_meta": meta}).randomized
