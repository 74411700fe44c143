"""Adversary, session 6: deferred vector-index writes (textual/index_defer.py) seen from another reader.

The deferring cube's overlay scores its own queued writes exactly; a reader that shares the database but
not the overlay (a second cube object on the folder, a process sharing a Chroma server) must see them too:
the outbox is in the shared database, and the write was acknowledged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.textual import dense as DN
from memos_integrations.textual import index_defer as D
from memos_integrations.textual.filters import MemoryFilter


def _dense_ids(cube: MemCube, query: str, user: str, k: int = 3) -> list[str]:
    """The dense leg's own answer (a whole search also has keyword legs, which would hide a missing vector)."""
    mem = cube.text_mem
    found = DN.dense(mem, cube.embedder.embed_query(query), MemoryFilter(current=True, user_id=user), k)
    by_rid = mem.store.get_by_rid([r for r, _ in found])
    return [by_rid[r].id for r, _ in found]


def test_another_reader_of_a_deferring_cube_finds_its_queued_writes_on_the_ann_path(
        tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "MAX_AGE", 1e9)  # nothing drains in the background during the test
    writer = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    reader = MemCube.open(tmp_path / "c", embedder=embedder)  # another connection, no overlay of its own
    try:
        old = writer.add(memory=["Rosa keeps bees on her roof.", "Rosa's bike is red."], user_id="rosa")
        D.defer_writes(writer.text_mem)
        reader.text_mem.exact_search_max = 0  # the ANN path (a cube past 4096 candidates per filter)
        new = writer.add(memory="Rosa adopted a three-legged cat called Biscuit.", user_id="rosa")[0]
        changed = writer.update(old[1].id, text="Rosa sold her bike and now takes the tram to work.")
        assert len(writer.store.outbox()) == 2  # acknowledged, not in the index yet
        assert _dense_ids(reader, "What pet does Rosa have?", "rosa")[0] == new.id
        assert _dense_ids(reader, "How does Rosa get to work?", "rosa")[0] == changed.id
        assert new.id not in _dense_ids(reader, "What pet does Rosa have?", "tom")  # still scoped
    finally:
        reader.close()
        writer.close()


def test_a_failed_flush_leaves_the_background_drain_its_retry(tmp_path: Path, embedder: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(D, "MAX_AGE", 0.2)
    cube = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    try:
        D.defer_writes(cube.text_mem)
        inner = cube.text_mem.index.inner  # type: ignore[attr-defined]  # the PendingOverlay defer_writes put there
        upsert, down = inner.upsert, {"on": True}

        def flaky(*args: Any, **kw: Any) -> Any:
            if down["on"]:
                raise OSError("the index's disk is full")
            return upsert(*args, **kw)

        monkeypatch.setattr(inner, "upsert", flaky)
        with monkeypatch.context() as quiet:  # the background drain waits while the index is down
            quiet.setattr(D, "_due", lambda state, now: False)
            cube.add(memory="Ines tunes pianos in Lisbon.", user_id="ines")
            assert D.flush(cube.text_mem) == 0  # a search's bulk flush (or anyone's) that fails: still queued
        down["on"] = False  # the index works again; no write or search follows
        deadline = time.monotonic() + 5.0
        while cube.store.outbox() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cube.store.outbox() == []  # the background drain retried it, as after its own failure
    finally:
        cube.close()
