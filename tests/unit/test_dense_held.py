"""Dense candidates held between searches (textual/dense.py, issue 13): the same hits, and never stale."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest

from memos_integrations.textual import dense as D
from memos_integrations.textual.filters import MemoryFilter
from memos_integrations.textual.retrieve import BALANCED, DEEP, FAST

NOTES = ["Caroline went to the LGBTQ support group yesterday.", "Melanie painted a sunrise over the lake.",
         "Caroline is researching adoption agencies.", "Melanie's kids loved camping in the mountains.",
         "Caroline signed up for a pottery class on Friday.", "Melanie ran a charity race for mental health."]


def _fill(cube: Any) -> None:
    for n, user in enumerate(("u1", "u2")):
        cube.add(messages=[{"role": "user", "content": t} for t in NOTES], user_id=user, session_id=f"s{n}")


def _ids(cube: Any, query: str, **kw: Any) -> list[str]:
    """The dense leg's own answer (a search re-reads its hits under the filter, which would hide a stale leg)."""
    store = cube.text_mem.store
    found = D.dense(cube.text_mem, cube.embedder.embed_query(query), MemoryFilter(current=True, **kw), 20)
    by_rid = store.get_by_rid([r for r, _ in found])
    return [by_rid[r].id for r, _ in found]


def test_dense_held_same_hits_as_reading_every_time(cube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(cube)

    def run() -> list[Any]:
        return [[(h.item.id, h.score, h.ranks) for h in cube.search(q, top_k=5, plan=plan, **scope)]
                for plan in (BALANCED, DEEP, FAST) for scope in ({}, {"user_id": "u2"}, {"session_id": "s0"})
                for q in ("Who went to the support group?", "What did Melanie paint?", "adoption")]

    held = run()
    assert any(held)
    assert any(cube.text_mem.store._decoded.derived.values())  # something was held
    monkeypatch.setattr(D, "candidates", lambda mem, flt: None)  # the path before: read every time
    assert run() == held


def test_dense_held_sees_writes_deletes_and_other_connections(cube: Any) -> None:
    _fill(cube)
    query = "a zebra quilting in Reykjavik"
    assert _ids(cube, query, user_id="u1")  # holds u1's candidates
    new = cube.add(memory="A zebra was quilting in Reykjavik.", user_id="u1")[0]
    assert _ids(cube, query, user_id="u1")[0] == new.id  # this process's write retires what was held
    cube.delete(new.id)
    assert new.id not in _ids(cube, query, user_id="u1")
    store = cube.text_mem.store
    victim = _ids(cube, "pottery class", user_id="u1")[0]
    with sqlite3.connect(store.path) as other:  # another connection (another process) moves it out of scope
        other.execute("UPDATE items SET user_id = 'u9' WHERE id = ?", (victim,))
    assert victim not in _ids(cube, "pottery class", user_id="u1")
    assert victim in _ids(cube, "pottery class", user_id="u9")


def test_dense_held_not_used_inside_a_write(cube: Any) -> None:
    _fill(cube)
    store, flt = cube.text_mem.store, MemoryFilter(user_id="u1", current=True)
    qvec = cube.embedder.embed_query("pottery class")
    first = D.dense(cube.text_mem, qvec, flt, 3)
    with store.transaction() as tx:  # this thread's uncommitted write is seen by its own search
        tx.execute("UPDATE items SET user_id = 'u9' WHERE rid = ?", (first[0][0],))
        assert first[0][0] not in [r for r, _ in D.dense(cube.text_mem, qvec, flt, 3)]
    assert first[0][0] not in [r for r, _ in D.dense(cube.text_mem, qvec, flt, 3)]


def test_dense_held_ends_when_a_memory_stops_being_true(cube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing commits, but time passes a memory's ``valid_to``: it leaves the candidates on time; a clock
    set back never reuses candidates read later than it."""
    _fill(cube)
    store = cube.text_mem.store
    target = _ids(cube, "charity race", user_id="u2")[0]
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    with store.transaction() as tx:
        tx.execute("UPDATE items SET valid_to = ? WHERE id = ?", (clock[0] + 10, target))
    assert target in _ids(cube, "charity race", user_id="u2")  # held from here on
    clock[0] += 5
    assert target in _ids(cube, "charity race", user_id="u2")
    clock[0] += 6  # past valid_to: the SQL would leave it out now, so must the held candidates
    assert target not in _ids(cube, "charity race", user_id="u2")
    clock[0] -= 6  # a clock set back: the entry read at +11 is not trusted before then
    assert target in _ids(cube, "charity race", user_id="u2")


def test_dense_held_bounded_per_cube(cube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(cube)
    for n in range(3 * D.MAX_HELD):
        cube.search("support group", top_k=3, plan=FAST, session_id=f"s{n}")
    assert len(cube.text_mem.store._decoded.derived) <= D.MAX_HELD
    monkeypatch.setattr(D, "MAX_HELD_ROWS", 8)  # rows in all, too: two whole-cube filters do not fit
    cube.search("support group", top_k=3, plan=FAST, user_id="u1")
    cube.search("support group", top_k=3, plan=FAST, user_id="u2")
    held = cube.text_mem.store._decoded.derived.values()
    assert sum(len(e.rids or ()) for e in held) <= 8 or len(held) == 1
