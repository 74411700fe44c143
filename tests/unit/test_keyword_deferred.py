"""The keyword leg's named pass left out where its output would go unread (speaker_legs.keyword_leg),
the scope's speakers (dense.speakers) and each row's speaker (caches.held_speaker_map) held between
searches, issue 13: the same hits as reading everything every time, whatever was written, by whom,
and when."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest

from memos_integrations.storage.caches import held_speaker_map, held_speakers
from memos_integrations.textual import dense as D
from memos_integrations.textual import expand as E
from memos_integrations.textual import shape as S
from memos_integrations.textual import speaker_legs as K
from memos_integrations.textual.filters import MemoryFilter
from memos_integrations.textual.retrieve import BALANCED, DEEP, MULTIHOP

TURNS = [("Caroline", "I went to the LGBTQ support group yesterday, it was powerful."),
         ("Melanie", "That's great Caroline! I painted a sunrise over the lake last week."),
         ("Caroline", "I'm researching adoption agencies, I want to give a kid a home."),
         ("Melanie", "My kids loved camping in the mountains, we roasted marshmallows."),
         ("Caroline", "Bye Melanie, take care!"),
         ("Melanie", "I ran a charity race for mental health on Saturday."),
         ("Caroline", "Thanks Melanie, glad it helped ya."),
         ("Melanie", "I signed up for a pottery class, Caroline, you should come.")]
QUERIES = ["What did Caroline research?", "What does Melanie paint?", "What activities does Melanie do?",
           "How did Caroline and Melanie spend the weekend?", "What did Jon paint?", "adoption agencies",
           "What did caroline say about camping?", "What did Jon think of the pottery class?",
           "What did Priya paint?", "What did Zoe say about the lake?"]
# u3: Jon's one turn, which his name finds through BM25 while the dense leg's best are Gina's turns about him
POTTERY = [("Gina", f"{'Jon and I' if n < 4 else 'We'} went to the pottery class {n}; I think he liked the {c} bowl.")
           for n, c in enumerate("red blue green clay white black tall flat small big round glazed".split())]
SPEAKERS = {"Caroline", "Melanie", "Gina", "Jon"}


def _fill(cube: Any) -> None:
    for n, user in enumerate(("u1", "u2")):
        msgs = [{"role": "user", "name": who, "content": text} for who, text in TURNS]
        cube.add(messages=msgs, user_id=user, session_id=f"s{n}")
    turns = [*POTTERY, ("Jon", "Meh.")]
    cube.add(messages=[{"role": "user", "name": who, "content": text} for who, text in turns], user_id="u3",
             session_id="s3")


def _run(cube: Any) -> list[Any]:
    return [[(h.item.id, h.score, sorted(h.ranks.items())) for h in cube.search(q, top_k=5, plan=plan, **scope)]
            for plan in (BALANCED, DEEP, MULTIHOP) for scope in ({}, {"user_id": "u2"}, {"session_id": "s0"})
            for q in QUERIES]


def _same_as_always_named(cube: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The searches with deferral and held speakers, checked against the path before (the named pass
    run every time, the scope's speakers asked of SQL)."""
    deferred: list[bool] = []
    leg = K.keyword_leg

    def spy(*a: Any, **kw: Any) -> Any:
        out = leg(*a, **kw)
        deferred.append(isinstance(out, K.Deferred))
        return out

    with monkeypatch.context() as m:
        m.setattr(K, "keyword_leg", spy)
        now = _run(cube)
    with monkeypatch.context() as m:
        m.setattr(K, "_MAX_SCAN", -1)  # every cube is "too large": the named pass always runs
        m.setattr(D, "speakers", lambda mem, flt, limit: None)
        m.setattr(S, "held_speaker_map", lambda store, max_rows: None)
        m.setattr(E, "held_speaker_map", lambda store, max_rows: None)
        assert _run(cube) == now
    assert any(deferred) and not all(deferred)  # both paths were taken
    return now


def test_deferred_same_hits_as_named_pass(cube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(cube)
    assert any(_same_as_always_named(cube, monkeypatch))


def test_deferred_sees_writes_deletes_other_connections_and_time(cube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(cube)
    _same_as_always_named(cube, monkeypatch)  # speakers held from here on
    store = cube.text_mem.store
    assert held_speakers(store, 64, 4096) == SPEAKERS
    # this process's write: a new speaker the queries name
    cube.add(messages=[{"role": "user", "name": "Priya", "content": "I painted my dance studio blue."}],
             user_id="u1", session_id="s0")
    assert "Priya" in (held_speakers(store, 64, 4096) or ())
    _same_as_always_named(cube, monkeypatch)
    # deleted: still a speaker of a row (a superset), and the searches agree
    cube.delete([i.id for i in cube.text_mem.list_items() if i.metadata.get("speaker") == "Priya"])
    _same_as_always_named(cube, monkeypatch)
    # another connection (another process) renames a speaker of u2's session: seen on the next search
    with sqlite3.connect(store.path) as other:
        rows = other.execute("SELECT id, metadata FROM items WHERE user_id = 'u2'").fetchall()
        for item_id, meta in rows[:3]:
            other.execute("UPDATE items SET metadata = ? WHERE id = ?",
                          (json.dumps({**json.loads(meta), "speaker": "Zoe"}), item_id))
    assert "Zoe" in (held_speakers(store, 64, 4096) or ())
    _same_as_always_named(cube, monkeypatch)
    # time passes a memory's valid_to (nothing commits): it leaves every leg alike
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    with store.transaction() as tx:
        tx.execute("UPDATE items SET valid_to = ? WHERE user_id = 'u2'", (clock[0] + 10,))
    before = _same_as_always_named(cube, monkeypatch)
    clock[0] += 11
    assert _same_as_always_named(cube, monkeypatch) != before


def test_held_speakers_not_inside_a_write_and_bounded(cube: Any) -> None:
    _fill(cube)
    store = cube.text_mem.store
    with store.transaction():  # this thread must see its own uncommitted rows: nothing held is used
        assert held_speakers(store, 64, 4096) is None
    assert held_speakers(store, 64, 4096) == SPEAKERS
    assert held_speakers(store, 1, 4096) is None  # more speakers than asked for: none held, the named pass runs
    assert held_speakers(store, 64, 5) is None  # more rows than one scan may read: none held either
    cube.add(messages=[{"role": "user", "name": f"p{n}", "content": f"note {n}"} for n in range(5)], user_id="u3")
    assert held_speakers(store, 8, 4096) is None and len(held_speakers(store, 64, 4096) or ()) == 9


def _scope(cube: Any, **kw: Any) -> frozenset[Any] | None:
    return D.speakers(cube.text_mem, MemoryFilter(current=True, **kw), 64)


def test_scope_speakers_held_never_stale(cube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(cube)
    store = cube.text_mem.store
    assert _scope(cube, user_id="u3") == {"Gina", "Jon"}
    cube.add(memory="a note without a speaker", user_id="u3")  # this process's write: None is someone else
    assert _scope(cube, user_id="u3") == {"Gina", "Jon", None}
    cube.delete([i.id for i in cube.text_mem.list_items(MemoryFilter(user_id="u3")) if not i.metadata.get("speaker")])
    assert _scope(cube, user_id="u3") == {"Gina", "Jon"}
    with sqlite3.connect(store.path) as other:  # another connection: a number is a value SQL sees too
        other.execute("UPDATE items SET metadata = json_set(metadata, '$.speaker', 7) WHERE user_id = 'u3' "
                      "AND json_extract(metadata, '$.speaker') = 'Jon'")
    assert _scope(cube, user_id="u3") == {"Gina", 7}
    with store.transaction() as tx:  # inside a write: this thread's own rows, never what is held
        tx.execute("UPDATE items SET user_id = 'u9' WHERE user_id = 'u3'")
        assert _scope(cube, user_id="u3") is None
    assert _scope(cube, user_id="u3") == frozenset() and _scope(cube, user_id="u9") == {"Gina", 7}
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    with store.transaction() as tx:  # Gina's turns stop being true in 10 s: nothing commits meanwhile
        tx.execute("UPDATE items SET valid_to = ? WHERE json_extract(metadata, '$.speaker') = 'Gina'", (clock[0] + 10,))
    assert _scope(cube, user_id="u9") == {"Gina", 7}
    clock[0] += 11
    assert _scope(cube, user_id="u9") == {7}
    clock[0] -= 11  # a clock set back never trusts what was read later than it
    assert _scope(cube, user_id="u9") == {"Gina", 7}
    assert D.speakers(cube.text_mem, MemoryFilter(current=True), 3) is None  # more than the limit: not held
    for n in range(3 * D.MAX_HELD):  # bounded per cube
        _scope(cube, session_id=f"s{n}")
    assert len(store._decoded.derived) <= D.MAX_HELD


def test_speaker_map_held_never_stale(cube: Any) -> None:
    _fill(cube)
    store = cube.text_mem.store

    def said(item_id: str) -> str | None:
        rid = store.db.read("SELECT rid FROM items WHERE id = ?", (item_id,))[0][0]
        return (held_speaker_map(store, 4096) or {}).get(rid, "absent")

    new = cube.add(messages=[{"role": "user", "name": "Priya", "content": "I painted my studio."}], user_id="u1")[0]
    assert said(new.id) == "Priya"  # this process's write
    note = cube.add(memory="a note", user_id="u1")[0]
    assert said(note.id) is None  # no speaker: nobody to boost
    with sqlite3.connect(store.path) as other:  # another connection renames one, makes another a number
        other.execute("UPDATE items SET metadata = json_set(metadata, '$.speaker', 'Zoe') WHERE id = ?", (new.id,))
        other.execute("UPDATE items SET metadata = json_set(metadata, '$.speaker', 7) WHERE id = ?", (note.id,))
    assert said(new.id) == "Zoe" and said(note.id) is None
    with store.transaction() as tx:  # inside a write: never what is held
        tx.execute("UPDATE items SET metadata = json_set(metadata, '$.speaker', 'Ann') WHERE id = ?", (new.id,))
        assert held_speaker_map(store, 4096) is None
    assert said(new.id) == "Ann"
    assert held_speaker_map(store, 5) is None  # more rows than one scan may read: not held


def test_content_words_held_per_text_and_bounded() -> None:
    from memos_integrations.textual.retrieve import keyword_terms

    short, long = "Bye Caroline, take care of the pottery!", "pottery wheel " * 200
    before = K._words.cache_info().currsize
    assert K.content_words(short, {"caroline"}) == len([w for w in keyword_terms(short, None, unique=False) if w != "caroline"])
    assert K.content_words(long, set()) == 400 and K._words.cache_info().currsize <= before + 1  # long texts: not held
    assert K._words.cache_info().maxsize == K._WORDS_HELD == 16_384  # bounded: ~12 MB at most, 50+ conversations
