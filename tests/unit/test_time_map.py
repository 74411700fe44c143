"""The event-time map held per commit (storage/caches.held_event_times, read by the time boost): the same
values the decoded rows give, after every kind of write, from this cube object or another one."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.storage.caches import held_event_times
from memos_integrations.textual import shape as S
from memos_integrations.textual.filters import MemoryFilter
from memos_integrations.textual.retrieve import BALANCED, DEEP
from memos_integrations.textual.shape import event_times

TURNS = [("Caroline", "I went to the LGBTQ support group yesterday."), ("Melanie", "I painted a sunrise last week."),
         ("Caroline", "I'm researching adoption agencies."), ("Melanie", "We went camping in the mountains.")]
WHEN = ["When did Caroline go to the support group?", "What did Melanie paint in May 2023?",
        "What happened last week?", "When did Melanie go camping?"]


def _fill(cube: Any) -> list[Any]:
    items = []
    for n, (date, user) in enumerate((("8 May, 2023", "u1"), ("25 May, 2023", "u1"), ("9 June, 2023", "u2"))):
        items += cube.add(messages=[{"role": "user", "name": s, "content": t} for s, t in TURNS],
                          user_id=user, session_id=f"s{n}", timestamp=date)
    return items


def _decoded(store: Any) -> dict[int, tuple[float | None, bool]]:
    """What the time boost read before: every row decoded."""
    rids = store.candidate_rids(MemoryFilter(states=None, current=False), -1)
    return {r: (None if it.event_time is None else it.event_time.timestamp(), "refers_to" in it.metadata)
            for r, it in store.ranking_rows(rids).items()}


def _check(cube: Any) -> None:
    store = cube.text_mem.store
    held = held_event_times(store, 4096)
    assert held == _decoded(store)
    assert held_event_times(store, 4096) is held  # held until something commits


def test_time_map_equals_decoded_rows_after_every_write(cube: Any) -> None:
    items = _fill(cube)
    _check(cube)
    assert any(mentions for _, mentions in held_event_times(cube.text_mem.store, 4096).values())
    cube.update(items[0].id, event_time="2024-02-01T10:00:00")  # update
    _check(cube)
    cube.update(items[1].id, metadata={"speaker": "Melanie"})  # its "refers_to" goes
    _check(cube)
    cube.update(items[2].id, valid_to=datetime(2023, 6, 1, tzinfo=timezone.utc))  # superseded: no longer true
    _check(cube)
    cube.delete(items[3].id)  # delete
    _check(cube)
    cube.add(memory="a note without a time", user_id="u1")  # add
    _check(cube)
    assert held_event_times(cube.text_mem.store, 3) is None  # bounded: a larger cube decodes its rows


def test_time_map_follows_another_cube_on_the_same_file(cube: Any, embedder: Any) -> None:
    """The hostile case: a second MemCube (another connection, as another process) rewrites an item's
    event time; this cube's next search must boost by the new time, never the one it held."""
    items = _fill(cube)
    query = "What happened in February 2024?"
    first = cube.search(query, top_k=12, plan=BALANCED, user_id="u1")
    assert held_event_times(cube.text_mem.store, 4096)  # held by that search
    target = next(h.item for h in first[3:] if h.item.id in {i.id for i in items})
    other = MemCube.open(cube.path, embedder=embedder)
    try:
        other.update(target.id, event_time="2024-02-14T10:00:00")
    finally:
        other.close()
    _check(cube)
    hits = cube.search(query, top_k=12, plan=BALANCED, user_id="u1")
    boosted = {h.item.id: h.score for h in hits}
    before = {h.item.id: h.score for h in first}
    assert boosted[target.id] == pytest.approx(before[target.id] * 1.5)  # in the period: time_boost 0.5


@pytest.mark.parametrize("plan", [BALANCED, DEEP])
def test_time_map_same_hits_as_decoding(cube: Any, plan: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scope, as_of, deletion and supersession: a search with the map returns what decoding returned."""
    items = _fill(cube)
    cube.update(items[2].id, valid_to=datetime(2023, 6, 1, tzinfo=timezone.utc))
    cube.delete(items[5].id)
    now = datetime(2023, 6, 10, tzinfo=timezone.utc)

    def run() -> list[Any]:
        return [[(h.item.id, h.score, h.ranks) for h in cube.search(q, top_k=8, plan=plan, now=now, **kw)]
                for q in WHEN for kw in ({}, {"user_id": "u1"}, {"as_of": "2023-05-30T00:00:00"})]

    held = run()
    assert any(held)
    monkeypatch.setattr(S, "held_event_times", lambda store, rows: None)  # the path before: decode the rows
    assert run() == held


def test_time_map_is_not_read_by_a_thread_inside_a_write(cube: Any) -> None:
    """Inside a transaction the thread must see its own uncommitted rows: nothing held is used."""
    items = _fill(cube)
    store = cube.text_mem.store
    rid = store.rid_ids([items[0].id], MemoryFilter())[items[0].id]
    with store.transaction() as tx:
        tx.execute("UPDATE items SET event_time = ? WHERE rid = ?", (0.0, rid))
        assert held_event_times(store, 4096) is None
        assert event_times(cube.text_mem, [rid], store.ranking_rows)[rid][0] == 0.0
    _check(cube)


def test_time_map_reads_the_key_however_the_json_spells_it(cube: Any) -> None:
    """The scan parses a row's JSON only where its text could name the key: an escaped name, or the
    name as a value, must read as the decoded row does (written raw, as another program could)."""
    import sqlite3

    _fill(cube)
    store = cube.text_mem.store
    rids = store.candidate_rids(MemoryFilter(), 3)
    with sqlite3.connect(store.path) as other:
        for rid, meta in zip(rids, ('{"refers\\u005fto": []}', '{"note": "refers_to", "x": "\\"refers_to\\""}', "{}")):
            other.execute("UPDATE items SET metadata = ? WHERE rid = ?", (meta, rid))
    held = held_event_times(store, 4096)
    assert [held[r][1] for r in rids] == [True, False, False]
    _check(cube)
