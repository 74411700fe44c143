"""The engine's CPU savings per new search (issue 13) answer what the SQL they replace answers."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

from memos_integrations.items import Lifecycle
from memos_integrations.storage.caches import (
    SPEAKER_MAP_ROWS,
    held_event_times,
    held_speaker_map,
    held_speakers,
    scope_speakers,
)
from memos_integrations.textual import dense as D
from memos_integrations.textual.filters import MemoryFilter

SCOPES = [MemoryFilter(), MemoryFilter(user_id="u1"), MemoryFilter(user_id="u2"), MemoryFilter(session_id="s2")]


def _scopes_agree(cube: Any) -> None:
    """Every scope's held speakers (dense.speakers) are SQL's, right after whatever was just written."""
    mem = cube.text_mem
    for flt in SCOPES:
        for limit in (1, 2, 64):
            assert D.speakers(mem, flt, limit) == scope_speakers(mem.store, flt, limit), (flt, limit)


def test_scope_speakers_from_held_rows_equal_sql_through_odd_speakers_and_writes(cube: Any) -> None:
    """The speakers of a scope are derived from its held candidates and who said each row only where
    every row has a non-empty string speaker; a number, an empty string, an object, a missing speaker
    and a change made by another connection all give SQL's own answer."""
    for n, who in enumerate(["Ann", "Bob", "Ann", "Cy"]):
        cube.add(memory=f"note {n} about the kettle", user_id="u1" if n < 2 else "u2", session_id=f"s{n % 3}",
                 metadata={"speaker": who})
    _scopes_agree(cube)
    assert D.speakers(cube.text_mem, MemoryFilter(user_id="u1"), 64) == {"Ann", "Bob"}
    for odd in (7, "", {"name": "Ann"}, None):
        cube.add(memory=f"an odd speaker {odd!r}", user_id="u2", session_id="s2",
                 metadata={} if odd is None else {"speaker": odd})
        _scopes_agree(cube)
    store = cube.text_mem.store
    rid = store.candidate_rids(MemoryFilter(user_id="u1"), 1)[0]
    with sqlite3.connect(store.path) as other:  # behind the engine's back: held values must not survive it
        other.execute("UPDATE items SET metadata = ? WHERE rid = ?", ('{"speaker": "Zed"}', rid))
    _scopes_agree(cube)
    assert "Zed" in D.speakers(cube.text_mem, MemoryFilter(user_id="u1"), 64)  # type: ignore[operator]


def test_a_search_right_after_a_commit_reads_no_scope_speakers(cube: Any, monkeypatch: Any) -> None:
    """Where every row of the scope has a string speaker, the held rows answer: no scan of the scope."""
    for n, who in enumerate(["Ann", "Bob", "Ann", "Bob"]):
        cube.add(memory=f"note {n}: {who} put the kettle on the shelf", user_id="u1", metadata={"speaker": who})
    calls: list[Any] = []

    def counted(*a: Any) -> Any:
        calls.append(a)
        return scope_speakers(*a)

    monkeypatch.setattr(D, "scope_speakers", counted)
    with cube.text_mem.store.transaction():
        pass
    assert cube.search("Where did Ann put the kettle?", top_k=3)
    assert D.speakers(cube.text_mem, MemoryFilter(), 64) == {"Ann", "Bob"} and calls == []


def _maps(store: Any) -> tuple[Any, Any, Any]:
    return (held_speaker_map(store, SPEAKER_MAP_ROWS), held_event_times(store, SPEAKER_MAP_ROWS),
            held_speakers(store, 3, SPEAKER_MAP_ROWS))


def _carried_equal_scanned(store: Any) -> tuple[Any, Any, Any]:
    """The maps as carried across the commits so far, then as one scan reads them now: equal."""
    carried = _maps(store)
    store._decoded.clear()  # nothing held: every map is scanned
    assert _maps(store) == carried
    return carried


def test_held_maps_carried_across_this_stores_writes_equal_a_fresh_scan(cube: Any) -> None:
    """Adds, updates that change or drop a speaker, odd speakers, an escaped key, a time reference, a
    delete, a rolled-back write, raw SQL inside this store's transaction and another connection's write:
    after each, the maps carried from the previous commit are the ones a scan reads."""
    store = cube.text_mem.store
    ids = [cube.add(memory=f"note {n}", metadata={"speaker": who}, user_id="u1")[0].id
           for n, who in enumerate(["Ann", "Bob", "Cy"])]
    _carried_equal_scanned(store)
    steps = [
        lambda: cube.add(memory="the trip was last Friday", metadata={"speaker": "Dee"}, user_id="u1",
                         timestamp="2023-05-07T10:00:00Z"),
        lambda: cube.update(ids[2], metadata={"speaker": "Ann"}),  # Cy speaks no more
        lambda: cube.update(ids[1], metadata={"speaker": 7}),
        lambda: cube.update(ids[1], metadata={"speaker": ""}),
        lambda: cube.update(ids[0], metadata={"sp\\u0065aker": "Esc", "refers_to": "a \\" + '"refers_to" text'}),
        lambda: cube.delete(ids[2]),
    ]
    for step in steps:
        _maps(store)  # held at the previous commit
        step()
        _carried_equal_scanned(store)
    _maps(store)
    try:
        with store.transaction():
            store.write_items([store.get_items([ids[1]])[ids[1]]], None)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    _carried_equal_scanned(store)
    for raw in ("UPDATE items SET metadata = '{\"speaker\": \"Raw\"}' WHERE id = ?",
                "update   items set event_time = 5.0 where id = ?"):
        _maps(store)
        with store.transaction() as tx:  # a write this store cannot name: everything read again
            tx.execute(raw, (ids[1],))
        assert _carried_equal_scanned(store)[0][store.rid_ids([ids[1]], MemoryFilter(states=None))[ids[1]]] == "Raw"
    _maps(store)
    with sqlite3.connect(store.path) as other:
        other.execute("UPDATE items SET metadata = '{\"speaker\": \"Other\"}' WHERE id = ?", (ids[0],))
    assert "Other" in _carried_equal_scanned(store)[0].values()


def test_an_add_does_not_scan_every_row_for_the_held_maps(cube: Any) -> None:
    """After this store's own commit only the rows it wrote are read again (the maps were one scan of
    every row per commit: a fifth of a search's CPU right after an add)."""
    store = cube.text_mem.store
    for n in range(5):
        cube.add(memory=f"note {n}", metadata={"speaker": "Ann"}, user_id="u1")
    _maps(store)
    cube.add(memory="a new note", metadata={"speaker": "Bob"}, user_id="u1")
    reads: list[str] = []
    read = store.db.read

    def counted(sql: str, params: Any = ()) -> Any:
        reads.append(sql)
        return read(sql, params)

    store.db.read = counted  # type: ignore[method-assign]
    try:
        speaker_of, _, speakers = _maps(store)
    finally:
        del store.db.read
    assert speakers == {"Ann", "Bob"} and len(speaker_of) == 6
    scans = [sql for sql in reads if "metadata" in sql]
    assert len(scans) == 2 and all("WHERE rid IN (?)" in sql for sql in scans), reads


def test_rows_decoded_before_this_stores_commit_are_reused_unless_it_wrote_them(cube: Any) -> None:
    """After an add, a row ranking read before it is served without a read; a row the commit wrote
    (an update), one a raw statement in this store's transaction wrote, and one another connection wrote
    are read again and show their new content."""
    store = cube.text_mem.store
    ids = [cube.add(memory=f"note {n}", metadata={"speaker": "Ann"}, user_id="u1")[0].id for n in range(3)]
    rid_of = store.rid_ids(ids, MemoryFilter(states=None))
    rids = [rid_of[i] for i in ids]
    held = store.ranking_rows(rids)
    cube.add(memory="another note", user_id="u1")
    reads: list[str] = []
    read = store.db.read

    def counted(sql: str, params: Any = ()) -> Any:
        reads.append(sql)
        return read(sql, params)

    store.db.read = counted  # type: ignore[method-assign]
    try:
        again = store.ranking_rows(rids)
    finally:
        del store.db.read
    assert all(again[r] is held[r] for r in rids) and not [s for s in reads if "FROM items WHERE" in s]
    cube.update(ids[0], text="note zero, rewritten")
    assert store.ranking_rows(rids)[rids[0]].text == "note zero, rewritten"
    with store.transaction() as tx:
        tx.execute("UPDATE items SET text = 'raw' WHERE rid = ?", (rids[1],))
    assert store.ranking_rows(rids)[rids[1]].text == "raw"
    store.ranking_rows(rids)
    with sqlite3.connect(store.path) as other:
        other.execute("UPDATE items SET text = 'other' WHERE rid = ?", (rids[2],))
    assert store.ranking_rows(rids)[rids[2]].text == "other"


FILTERS = [MemoryFilter(), MemoryFilter(user_id="u1"), MemoryFilter(session_id=["s0", "s2"]),
           MemoryFilter(tags_any=["t"]), MemoryFilter(states=None)]


def _candidates(mem: Any) -> list[Any]:
    out = []
    for flt in FILTERS:
        held = D.candidates(mem, flt)
        assert held is not None and held.rids is not None
        out.append((held.rids, held.matrix.tolist() if held.rids and held.matrix is not None else [], held.until))
    return out


def test_candidates_carried_across_this_stores_writes_equal_a_fresh_read(cube: Any) -> None:
    """Adds, an update in the middle of the rows, an archive, a delete, a memory moved to another user,
    one that ends (valid_to), a new vector without a new row (put_vectors) and raw SQL: after each, every
    filter's candidates carried from the previous commit are a fresh read's, row for row, vector for
    vector (and end no later)."""
    mem, store = cube.text_mem, cube.text_mem.store
    ids = [cube.add(memory=f"note {n} about tea", user_id=f"u{n % 2}", session_id=f"s{n % 3}",
                    tags=["t"] if n % 2 else [])[0].id for n in range(6)]
    vec = store.vectors_by_id([ids[1]])[ids[1]]
    steps = [
        lambda: cube.add(memory="a new note", user_id="u1", session_id="s2", tags=["t"]),
        lambda: cube.update(ids[2], text="note two, now about coffee", user_id="u1"),
        lambda: cube.update(ids[3], state=Lifecycle.ARCHIVED),
        lambda: cube.delete(ids[4]),
        lambda: cube.update(ids[0], valid_to=datetime.now(timezone.utc) + timedelta(days=1)),
        lambda: store.put_vectors({ids[1]: (store.get_items([ids[1]])[ids[1]].embed_text, -vec)}),
        lambda: cube.update(ids[0], valid_to=datetime.now(timezone.utc) - timedelta(days=1)),
    ]
    for step in steps:
        _candidates(mem)
        step()
        carried = _candidates(mem)
        store._decoded.clear()
        fresh = _candidates(mem)
        assert [c[:2] for c in carried] == [f[:2] for f in fresh]
        assert all(c[2] <= f[2] for c, f in zip(carried, fresh))
    _candidates(mem)
    with store.transaction() as tx:  # a write this store cannot name: read afresh
        tx.execute("UPDATE vectors SET vector = ? WHERE rid = ?", (store.encode_vector(vec), store.rid_ids(ids[1:2], MemoryFilter())[ids[1]]))
    carried = _candidates(mem)
    store._decoded.clear()
    assert carried == _candidates(mem)


def test_keyword_terms_held_per_text_but_never_shared() -> None:
    """The terms of a short text are split once; a caller changing its list changes no later answer,
    and each limit and uniqueness is its own answer."""
    from memos_integrations.textual import retrieve as R

    first = R.keyword_terms("What did Caroline's sister paint, and paint again?")
    assert first == ["caroline", "sister", "paint"]
    first.append("mallory")
    assert R.keyword_terms("What did Caroline's sister paint, and paint again?") == ["caroline", "sister", "paint"]
    assert R.keyword_terms("What did Caroline's sister paint, and paint again?", 2) == ["caroline", "sister"]
    assert R.keyword_terms("paint paint", unique=False) == ["paint", "paint"]
    long = "kettle " * 500
    assert R.keyword_terms(long, None, unique=False) == ["kettle"] * 500


def test_carried_rows_and_maps_hold_with_writes_and_searches_on_two_threads(cube: Any) -> None:
    """One thread adds and updates while another searches (each search carries what the last commit
    left); afterwards every held value equals a fresh read."""
    import threading

    mem, store = cube.text_mem, cube.text_mem.store
    ids = [cube.add(memory=f"note {n} about tea", metadata={"speaker": "Ann"}, user_id="u1")[0].id for n in range(4)]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for n in range(20):
                cube.add(memory=f"more tea {n}", metadata={"speaker": ["Bob", "Cy"][n % 2]}, user_id=f"u{n % 2}")
                cube.update(ids[n % 4], metadata={"speaker": ["Dee", "Ann"][n % 2]})
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        cube.search("Who talked about tea?", top_k=3)
    writer.join()
    assert not errors, errors
    carried = (_maps(store), _candidates(mem), store.ranking_rows(list(store.rid_ids(ids, MemoryFilter()).values())))
    store._decoded.clear()
    fresh = (_maps(store), _candidates(mem), store.ranking_rows(list(store.rid_ids(ids, MemoryFilter()).values())))
    assert carried[:2] == fresh[:2]
    assert {r: i.to_dict() for r, i in carried[2].items()} == {r: i.to_dict() for r, i in fresh[2].items()}
