"""The extended metadata filter operators and boolean composition, against a Python reference.

The SQL that ``MemoryFilter`` compiles runs on a bare in-memory SQLite table; a reference evaluator
written in plain Python (the semantics LlamaIndex's ``SimpleVectorStore`` uses) must select the same rows.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memos_integrations.errors import InvalidFilterError
from memos_integrations.textual.filters import MemoryFilter

# -- the reference ---------------------------------------------------------------------------------


def _contains(mv: Any, v: Any) -> bool:
    if isinstance(mv, list):
        return v in mv
    return isinstance(mv, str) and isinstance(v, str) and v in mv


def ref_leaf(op: str, v: Any, mv: Any, present: bool) -> bool:
    if op == "$is_empty":
        return (mv is None or mv == "" or mv == []) == v
    if op == "$exists":  # the key is there, even holding null
        return present == v
    if mv is None:
        return op in ("$ne", "$nin")
    if op == "$eq":
        return bool(mv == v)
    if op == "$ne":
        return bool(mv != v)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(mv, list) or isinstance(mv, str) != isinstance(v, str):
            return False
        return {"$gt": mv > v, "$gte": mv >= v, "$lt": mv < v, "$lte": mv <= v}[op]
    if op == "$in":
        return mv in v
    if op == "$nin":
        return mv not in v
    if op == "$contains":
        return _contains(mv, v)
    if op == "$any":
        return any(_contains(mv, x) for x in v)
    if op == "$all":
        return isinstance(mv, (list, str)) and all(_contains(mv, x) for x in v)
    if op == "$text_match":
        return isinstance(mv, str) and v in mv
    if op == "$text_match_insensitive":
        return isinstance(mv, str) and v.lower() in mv.lower()
    raise AssertionError(op)


def ref(meta: dict[str, Any], tree: dict[str, Any]) -> bool:
    for key, cond in tree.items():
        if key == "$and" and not all(ref(meta, t) for t in cond):
            return False
        if key == "$or" and not any(ref(meta, t) for t in cond):
            return False
        if key == "$not" and ref(meta, cond):
            return False
        if not key.startswith("$"):
            cond = cond if isinstance(cond, dict) else {"$eq": cond}
            if not all(ref_leaf(op, v, meta.get(key), key in meta) for op, v in cond.items()):
                return False
    return True


def sql_select(rows: list[dict[str, Any]], tree: dict[str, Any]) -> set[int]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE items (rid INTEGER PRIMARY KEY, metadata TEXT NOT NULL)")
    db.executemany("INSERT INTO items VALUES (?, ?)", [(i, json.dumps(m)) for i, m in enumerate(rows)])
    where, params = MemoryFilter(states=None, metadata=tree).to_sql("items")
    return {r[0] for r in db.execute(f"SELECT rid FROM items WHERE {where}", params)}


# -- generated rows and conditions ------------------------------------------------------------------

words = st.sampled_from(["a", "b", "ab", "Ab", "tea", "Tea time", ""])
rows_st = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "n": st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False), st.none()),
            "s": st.one_of(words, st.none()),
            "l": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
            "x": st.one_of(st.integers(0, 2), words, st.lists(st.sampled_from(["a", "b"]), max_size=2)),
        },
    ),
    min_size=1, max_size=12,
)


def leaf_st() -> st.SearchStrategy[dict[str, Any]]:
    num = st.integers(-3, 3)
    strs = st.lists(st.sampled_from(["a", "b", "c", "ab"]), max_size=3)
    return st.one_of(
        st.builds(lambda op, v: {"n": {op: v}}, st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]), num),
        st.builds(lambda op, v: {"s": {op: v}}, st.sampled_from(["$eq", "$ne", "$gt", "$lte", "$text_match",
                                                                   "$text_match_insensitive", "$contains"]), words),
        st.builds(lambda op, v: {"n": {op: v}}, st.sampled_from(["$in", "$nin"]), st.lists(num, max_size=3)),
        st.builds(lambda op, v: {k: {op: v}} if (k := "l") else {}, st.sampled_from(["$any", "$all", "$in", "$nin"]), strs),
        st.builds(lambda k, v: {k: {"$contains": v}}, st.sampled_from(["l", "x"]), st.sampled_from(["a", "b", "ab"])),
        st.builds(lambda k, v: {k: {"$any": v}}, st.just("x"), strs),
        st.builds(lambda k, v: {k: {"$is_empty": v}}, st.sampled_from(["n", "s", "l", "x", "missing"]), st.booleans()),
        st.builds(lambda k, v: {k: {"$exists": v}}, st.sampled_from(["n", "l"]), st.booleans()),
    )


tree_st = st.recursive(
    leaf_st(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"$not": x}, inner),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_st, tree=tree_st)
def test_sql_matches_the_reference(rows: list[dict[str, Any]], tree: dict[str, Any]) -> None:
    assert sql_select(rows, tree) == {i for i, m in enumerate(rows) if ref(m, tree)}


ROWS = [
    {"tags": ["red", "blue"], "title": "Green Tea", "year": 2020},
    {"tags": ["red"], "title": "black tea", "year": 2018},
    {"tags": [], "title": "", "year": None},
    {"title": "Oolong"},
]


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ({"tags": {"$contains": "red"}}, {0, 1}),
        ({"tags": {"$all": ["red", "blue"]}}, {0}),
        ({"tags": {"$all": []}}, {0, 1, 2}),
        ({"tags": {"$any": ["blue", "green"]}}, {0}),
        ({"title": {"$text_match": "Tea"}}, {0}),
        ({"title": {"$text_match_insensitive": "TEA"}}, {0, 1}),
        ({"tags": {"$is_empty": True}}, {2, 3}),
        ({"year": {"$is_empty": False}}, {0, 1}),
        ({"$not": {"year": {"$gt": 2019}}}, {1, 2, 3}),  # a missing year is "not > 2019"
        ({"$or": [{"year": 2018}, {"title": "Oolong"}]}, {1, 3}),
        ({"$and": [{"tags": {"$contains": "red"}}, {"$not": {"year": 2018}}]}, {0}),
        ({"title": {"$contains": "Tea"}}, {0}),  # a string holds a substring
    ],
)
def test_examples(tree: dict[str, Any], expected: set[int]) -> None:
    assert sql_select(ROWS, tree) == expected


def test_plain_conditions_still_and_together() -> None:
    rows = [{"k": 3, "j": "x"}, {"k": 3, "j": "y"}, {"k": 1, "j": "x"}]
    assert sql_select(rows, {"k": {"$gte": 3}, "j": "x"}) == {0}
    assert sql_select(rows, {"k": {"$nin": []}}) == {0, 1, 2}  # nothing excluded (was: nothing matched)


@pytest.mark.parametrize(
    "metadata",
    [
        {"$or": {"a": 1}},
        {"$and": []},
        {"$not": [{"a": 1}]},
        {"$not": {}},
        {"$nor": [{"a": 1}]},
        {"a": {"$any": "x"}},
        {"a": {"$all": [{"x": 1}]}},
        {"a": {"$text_match": 3}},
        {"a": {"$is_empty": "yes"}},
        {"a": {"$contains": None}},
        {"a": {"$contains": [1]}},
        {"$or": [{"bad key": 1}]},
        {"$or": [{"a": {"$regex": "x"}}]},
    ],
)
def test_bad_filters_are_refused(metadata: dict[str, Any]) -> None:
    with pytest.raises(InvalidFilterError):
        MemoryFilter(metadata=metadata)


def test_nesting_is_bounded() -> None:
    tree: dict[str, Any] = {"a": 1}
    for _ in range(40):
        tree = {"$not": tree}
    with pytest.raises(InvalidFilterError, match="nested"):
        MemoryFilter(metadata=tree)
