"""The engine's CPU savings per new search (issue 13) answer what the SQL they replace answers."""

from __future__ import annotations

import sqlite3
from typing import Any

from memos_integrations.storage.caches import scope_speakers
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
    monkeypatch.setattr(D, "scope_speakers", lambda *a: calls.append(a) or scope_speakers(*a))
    with cube.text_mem.store.transaction():
        pass
    assert cube.search("Where did Ann put the kettle?", top_k=3)
    assert D.speakers(cube.text_mem, MemoryFilter(), 64) == {"Ann", "Bob"} and calls == []
