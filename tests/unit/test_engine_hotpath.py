"""The search hot path's decoded-row cache (issue 13): same hits, never stale, never shared out."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

import pytest

from memos_integrations.items import Lifecycle
from memos_integrations.storage.caches import DecodedRows
from memos_integrations.storage.sqlstore import row_to_item
from memos_integrations.textual.filters import MemoryFilter
from memos_integrations.textual.retrieve import BALANCED, DEEP, MULTIHOP

TALK = [
    ("Caroline", "I went to the LGBTQ support group yesterday and it was powerful."),
    ("Melanie", "That sounds great! I painted a sunrise over the lake last weekend."),
    ("Caroline", "I am researching adoption agencies; I want to give a kid a loving home."),
    ("Melanie", "My kids loved the camping trip to the mountains in July."),
    ("Caroline", "When did you start pottery? I signed up for a class on Friday."),
    ("Melanie", "I ran a charity race for mental health on Saturday."),
    ("Caroline", "My friend from Sweden gave me a necklace as a reminder of home."),
    ("Melanie", "We went to a Matt Patterson concert with the whole family."),
]
QUESTIONS = ["When did Caroline go to the support group?", "What did Melanie paint?",
             "adoption agencies", "Where did the family go camping?", "Who gave Caroline a necklace?"]


def _fill(cube: Any, sessions: int = 3, users: tuple[str, ...] = ("u1", "u2")) -> None:
    for n in range(sessions):  # sessions and users: filters and time have something to choose among
        for user in users:
            msgs = [{"role": "user", "name": who, "content": f"{text} (session {n})"} for who, text in TALK]
            cube.add(messages=msgs, user_id=user, session_id=f"s{n}", timestamp=f"2023-0{n + 5}-0{n + 1}T10:00:00Z")


def _run(cube: Any) -> list[Any]:
    out = []
    for plan in (BALANCED, DEEP, MULTIHOP):
        for scope in ({}, {"user_id": "u2"}, {"session_id": ["s1", "s2"]},
                      {"as_of": datetime(2023, 6, 15, tzinfo=timezone.utc)}):
            for q in QUESTIONS:
                hits = cube.search(q, top_k=5, plan=plan, **scope)
                out.append([(h.item.to_dict(), h.score, h.ranks) for h in hits])
    return out


def test_hotpath_same_hits_as_decoding_every_row(cube: Any) -> None:
    _fill(cube)
    cube.update(cube.search("painted a sunrise", top_k=1)[0].item.id, state=Lifecycle.ARCHIVED)
    store = cube.text_mem.store
    cached = _run(cube)
    store.ranking_rows = store.get_by_rid  # the path before the cache: every row decoded afresh
    assert _run(cube) == cached
    assert any(cached) and sum(map(len, cached)) > 100


def test_hotpath_rows_rewritten_elsewhere_are_decoded_again(cube: Any) -> None:
    """A row changed behind the cache's back (another connection, raw SQL) is never served stale."""
    _fill(cube, 1, ("u1",))
    store = cube.text_mem.store
    rid = store.candidate_rids(MemoryFilter(), 1)[0]
    before = store.ranking_rows([rid])[rid]
    assert store.ranking_rows([rid])[rid] is before  # decoded once while the row is unchanged
    with sqlite3.connect(store.path) as other:
        other.execute("UPDATE items SET metadata = ?, text = ? WHERE rid = ?", ('{"speaker": "Zed"}', "rewritten", rid))
    after = store.ranking_rows([rid])[rid]
    assert (after.text, after.metadata) == ("rewritten", {"speaker": "Zed"})
    cube.update(after.id, text="updated through the engine")
    assert store.ranking_rows([rid])[rid].text == "updated through the engine"


def test_hotpath_rows_follow_this_process_writes_and_rollbacks(cube: Any) -> None:
    """Rows held since the last commit are reused without a read, so every write path must retire them:
    a write inside an open transaction is seen by that transaction, a rollback restores, usage counts don't."""
    _fill(cube, 1, ("u1",))
    store = cube.text_mem.store
    rid = store.candidate_rids(MemoryFilter(), 1)[0]
    held = store.ranking_rows([rid])[rid]
    store.touch([held.id])
    store.flush_usage()  # access counts are not decoded: the held row stays (PostgreSQL: any commit retires)
    assert store.ranking_rows([rid])[rid] is held or store.db.dialect != "sqlite"
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.execute("UPDATE items SET text = ? WHERE rid = ?", ("uncommitted", rid))
            assert store.ranking_rows([rid])[rid].text == "uncommitted"
            raise RuntimeError("roll back")
    assert store.ranking_rows([rid])[rid].text == held.text
    with store.transaction() as tx:
        tx.execute("UPDATE items SET text = ? WHERE rid = ?", ("committed", rid))
    assert store.ranking_rows([rid])[rid].text == "committed"


def test_hotpath_candidates_follow_commits_everywhere(cube: Any) -> None:
    """Candidate row ids (read per search; a cache of them would have to pass this): an add, a raw
    write of another connection and a write inside this thread's open transaction each show at once."""
    _fill(cube, 1, ("u1",))
    store, flt = cube.text_mem.store, MemoryFilter(user_id="u1")
    before = store.candidate_rids(flt, -1)
    before.append(-1)  # a caller changing its answer changes nothing held
    assert store.candidate_rids(flt, -1) == before[:-1]
    cube.add(memory="a new note", user_id="u1")
    assert len(store.candidate_rids(flt, -1)) == len(before)
    with sqlite3.connect(store.path) if store.db.dialect == "sqlite" else store.transaction() as other:
        other.execute("UPDATE items SET user_id = 'u9' WHERE rid = ?", (before[0],))
    assert before[0] not in store.candidate_rids(flt, -1)
    with store.transaction() as tx:
        tx.execute("UPDATE items SET user_id = 'u1' WHERE rid = ?", (before[0],))
        assert before[0] in store.candidate_rids(flt, -1)


def test_hotpath_returned_items_are_not_the_shared_rows(cube: Any) -> None:
    _fill(cube, 1, ("u1",))
    first = cube.search("support group", top_k=3, plan=DEEP)
    for hit in first:  # a caller that scribbles on its results
        hit.item.metadata["speaker"] = "Mallory"
        hit.item.text = "scribbled"
    again = cube.search("support group", top_k=3, plan=DEEP)
    assert [h.item.id for h in again] == [h.item.id for h in first]
    assert all(h.item.text != "scribbled" and h.item.metadata.get("speaker") != "Mallory" for h in again)


_ROW = ("id", "text", "", "fact", None, None, None, None, 1.0, 1.0, None, None, None, "generated", 1,
        "[]", None, None, None, "[]", "{}", None)


def _counting(max_rows: int) -> tuple[DecodedRows, list[Any]]:
    """A DecodedRows whose decodings are counted (the rows decoded, in order)."""
    seen: list[Any] = []

    def decode(row: Any) -> Any:
        seen.append(row)
        return row_to_item(row)

    return DecodedRows(decode, max_rows=max_rows), seen


def test_hotpath_decoded_rows_stay_bounded() -> None:
    cache, seen = _counting(4)
    row = _ROW
    for rid in range(10):
        cache.item(rid, (f"id{rid}", *row[1:]))
    assert len(cache._rows) <= 4
    cache.item(9, ("id9", *row[1:]))
    assert len(seen) == 10  # the latest row was still held: not decoded again


def test_hotpath_a_commit_retires_decoded_rows_which_serve_only_an_equal_row() -> None:
    """After a commit (a new token) nothing held is trusted without a read, but a row read again and found
    equal is not decoded again; a changed row is; retired entries stay bounded."""
    cache, seen = _counting(4)
    row = _ROW
    cache.valid("t1")
    first = cache.item(1, ("id1", *row[1:]))
    cache.item(2, ("id2", *row[1:]))
    assert cache.valid("t2").valid_rows == {}  # a commit: nothing is trusted without a read
    assert cache.item(1, ("id1", *row[1:])) is first and len(seen) == 2  # read again, equal: not decoded
    changed = cache.item(2, ("id2", "edited", *row[2:]))
    assert changed.text == "edited" and len(seen) == 3  # read again, changed: decoded
    assert cache.fresh(1, ("id1", *row[1:])).text == "text" and len(seen) == 3
    assert cache.fresh(2, ("id2", *row[1:])).text == "text" and len(seen) == 3  # the row as retired: equal, a copy
    for n in range(3, 40):  # many commits and rows: retired entries stay within max_rows
        cache.valid(f"t{n}")
        cache.item(n, (f"id{n}", *row[1:]))
    assert len(cache._retired) <= 4 and len(cache._rows) <= 4
    cache.clear()
    assert cache._retired == {} and cache.valid_rows == {}
