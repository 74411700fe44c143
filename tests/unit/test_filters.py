"""Filters: validation (InvalidFilterError with a helpful message) and what each field narrows, on a real cube."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from memos_integrations.errors import InvalidFilterError, InvalidInputError
from memos_integrations.items import Kind, MemoryItem
from memos_integrations.storage.base import VectorFilter
from memos_integrations.textual.filters import MemoryFilter

UTC = timezone.utc


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metadata": {"n": {"$regex": "x"}}}, "unknown operator"),
        ({"metadata": {"n": {}}}, "empty condition"),
        ({"metadata": {"bad key'; DROP": 1}}, "not a plain name"),
        ({"metadata": {"": 1}}, "not a plain name"),
        ({"metadata": {3: 1}}, "not a plain name"),
        ({"metadata": {"n": {"$in": "abc"}}}, "needs a list"),
        ({"metadata": {"n": {"$in": [{"a": 1}]}}}, "needs a list"),
        ({"metadata": {"n": {"$exists": "yes"}}}, "true or false"),
        ({"metadata": {"n": {"$gt": True}}}, "number or a string"),
        ({"metadata": {"n": {"$gt": None}}}, "number or a string"),
        ({"metadata": {"n": {"$eq": [1]}}}, "string, number"),
        ({"metadata": {"n": [1, 2]}}, "must be a string, number"),
        ({"metadata": "speaker=Caroline"}, "mapping"),
        ({"user_id": 5}, "user_id must be a string"),
        ({"session_id": ["s1", 2]}, "session_id must be a string"),
        ({"tags_all": 7}, "tags_all"),
        ({"kinds": ["fact", "gossip"]}, "kinds:"),
        ({"kinds": 3}, "kinds must be a list"),
        ({"states": ["alive"]}, "states:"),
        ({"time_from": "2023-01-01"}, "must be datetimes"),
        ({"time_from": datetime(2023, 6, 1, tzinfo=UTC), "time_to": datetime(2023, 5, 1, tzinfo=UTC)}, "swap"),
    ],
)
def test_invalid_filters_are_refused_with_a_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message):
        MemoryFilter(**kwargs)


def test_filter_values_reach_sql_as_parameters_only() -> None:
    evil = "x' OR 1=1 --"
    sql, params = MemoryFilter(user_id=evil, metadata={"speaker": evil}).to_sql()
    assert evil not in sql and evil in params


def test_vector_filter_carries_scope_kind_and_state() -> None:
    flt = MemoryFilter(user_id="u", kinds=["fact"]).vector_filter()
    assert flt == VectorFilter(user_id=("u",), kind=("fact",), state=("generated", "activated", "frozen"))
    assert MemoryFilter(states=None).vector_filter() is None


def test_chroma_translates_the_neutral_filter() -> None:
    from memos_integrations.storage.chroma import _where

    assert _where(MemoryFilter(user_id="u", kinds=["fact"]).vector_filter()) == {
        "$and": [{"user_id": {"$in": ["u"]}}, {"kind": {"$in": ["fact"]}},
                 {"state": {"$in": ["generated", "activated", "frozen"]}}]}
    assert _where(VectorFilter(user_id=("u",))) == {"user_id": {"$in": ["u"]}}
    assert _where(None) is None


def test_filters_compile_in_the_store_dialect_module() -> None:
    from memos_integrations.storage.filter_sql import compile_filter

    flt = MemoryFilter(user_id="u", tags_any=["a"], metadata={"n": {"$gte": 2}})
    assert compile_filter(flt, "items") == flt.to_sql("items")
    assert "json_each" in compile_filter(flt)[0] and compile_filter(MemoryFilter(states=None)) == ("1 = 1", [])


@pytest.fixture(scope="module")
def filled(tmp_path_factory, embedder):  # type: ignore[no-untyped-def]
    """One cube, read-only in the tests below: items that differ in each filterable field."""
    from memos_integrations import MemCube

    cube = MemCube.init_from_dir(tmp_path_factory.mktemp("filters") / "cube", embedder=embedder)
    t = lambda m, d: datetime(2023, m, d, tzinfo=UTC)  # noqa: E731
    rows = {
        "a": MemoryItem(text="Caroline paints sunsets by the lake.", user_id="caroline", session_id="s1", agent_id="bot1",
                        kind="event", tags=["art", "outdoors"], metadata={"n": 1, "speaker": "Caroline", "ok": True},
                        event_time=t(5, 8)),
        "b": MemoryItem(text="Caroline paints portraits of her family.", user_id="caroline", session_id="s2", agent_id="bot2",
                        kind="fact", tags=["art"], metadata={"n": 5, "speaker": "Caroline", "ok": False,
                                                              "place": {"city": "Lisbon"}}, event_time=t(6, 20)),
        "c": MemoryItem(text="Melanie paints pottery with her kids.", user_id="melanie", session_id="s1", agent_id="bot1",
                        kind="event", tags=["art", "kids"], metadata={"n": 10, "speaker": "Melanie"}, event_time=t(7, 1)),
        "d": MemoryItem(text="Melanie paints the garden fence.", user_id="melanie", session_id="s3",
                        kind="preference", tags=[], metadata={"speaker": "Melanie", "n": "ten"}, event_time=None),
    }
    for item in rows.values():
        item.kind = Kind(item.kind)
    cube.add_items(list(rows.values()))
    ids = {v.id: k for k, v in rows.items()}
    yield cube, ids
    cube.close()


def _found(filled, **kw):  # type: ignore[no-untyped-def]
    cube, ids = filled
    hits = cube.search("paints", top_k=50, **kw)
    return sorted(ids[h.item.id] for h in hits)


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({}, ["a", "b", "c", "d"]),
        ({"user_id": "caroline"}, ["a", "b"]),
        ({"user_id": ["caroline", "melanie"]}, ["a", "b", "c", "d"]),
        ({"user_id": "nobody"}, []),
        ({"agent_id": "bot1"}, ["a", "c"]),
        ({"session_id": "s1"}, ["a", "c"]),
        ({"session_id": ["s2", "s3"]}, ["b", "d"]),
        ({"kinds": ["event"]}, ["a", "c"]),
        ({"kinds": ["fact", "preference"]}, ["b", "d"]),
        ({"tags": ["art"]}, ["a", "b", "c"]),
        ({"tags": ["art", "kids"]}, ["c"]),
        ({"metadata": {"speaker": "Caroline"}}, ["a", "b"]),
        ({"metadata": {"n": {"$gte": 5}}}, ["b", "c"]),
        ({"metadata": {"n": {"$gt": 1, "$lt": 10}}}, ["b"]),
        ({"metadata": {"n": {"$lte": 1}}}, ["a"]),
        # a numeric range never matches a string value (SQLite orders every TEXT above every number)
        ({"metadata": {"n": {"$gt": 0}}}, ["a", "b", "c"]),
        ({"metadata": {"n": {"$gte": "a"}}}, ["d"]),
        ({"metadata": {"n": {"$in": [1, 10]}}}, ["a", "c"]),
        ({"metadata": {"n": {"$nin": [1, 10]}}}, ["b", "d"]),
        ({"metadata": {"n": {"$ne": 5}}}, ["a", "c", "d"]),
        ({"metadata": {"n": "ten"}}, ["d"]),
        ({"metadata": {"ok": True}}, ["a"]),
        ({"metadata": {"ok": False}}, ["b"]),
        ({"metadata": {"ok": {"$exists": True}}}, ["a", "b"]),
        ({"metadata": {"ok": {"$exists": False}}}, ["c", "d"]),
        ({"metadata": {"place.city": "Lisbon"}}, ["b"]),
        ({"metadata": {"speaker": "Melanie", "n": 10}}, ["c"]),
        ({"time_from": "2023-06-01", "time_to": "2023-06-30"}, ["b"]),
        ({"time_from": "1 June 2023", "user_id": "melanie"}, ["c", "d"]),  # d: no event time -> created_at (now)
        ({"time_to": "2023-06-30"}, ["a", "b"]),
    ],
)
def test_search_filters_narrow(filled, kw: dict, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert _found(filled, **kw) == expected


def test_get_all_filters(filled) -> None:  # type: ignore[no-untyped-def]
    cube, ids = filled
    assert sorted(ids[i.id] for i in cube.get_all(user_id="melanie")) == ["c", "d"]
    assert sorted(ids[i.id] for i in cube.get_all(session_id="s1", kinds=["event"])) == ["a", "c"]
    assert len(cube.get_all(limit=2)) == 2 and len(cube.get_all(limit=2, offset=3)) == 1


@pytest.mark.parametrize(
    "kw",
    [
        {"metadata": {"n": {"$near": 3}}},
        {"metadata": {"a b": 1}},
        {"kinds": ["gossip"]},
        {"user_id": 42},
        {"time_from": "2023-07-01", "time_to": "2023-06-01"},
    ],
)
def test_invalid_filter_in_search_raises_and_changes_nothing(filled, kw: dict) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.conftest import snapshot

    cube, _ = filled
    before = snapshot(cube)
    with pytest.raises(InvalidFilterError):
        cube.search("paints", **kw)
    assert snapshot(cube) == before


def test_unreadable_time_bound_is_a_filter_error(filled) -> None:  # type: ignore[no-untyped-def]
    cube, _ = filled
    with pytest.raises(InvalidInputError, match="cannot read"):
        cube.search("paints", time_from="sometime soon")


def test_a_day_as_time_to_includes_that_day(cube) -> None:  # type: ignore[no-untyped-def]
    item = cube.add(memory="The concert was on the last day of June.", timestamp="9:30 pm on 30 June, 2023")[0]
    assert [h.item.id for h in cube.search("concert", time_from="2023-06-30", time_to="2023-06-30")] == [item.id]
    assert [h.item.id for h in cube.search("concert", time_to="30 June 2023")] == [item.id]
    assert cube.search("concert", time_to="2023-06-30T21:00") == []
    assert cube.search("concert", time_to="2023-06-29") == []
