"""Deferred vector-index writes (textual/index_defer.py): acknowledged on the SQLite commit, never lost,
never doubled, and found by the next search, also on the ANN path, before the index has them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.storage.base import VectorFilter
from memos_integrations.storage.chroma import ChromaIndex
from memos_integrations.textual import index_defer as D

ROOT = Path(__file__).resolve().parents[2]


def consistent(cube: MemCube) -> set[str]:
    live = {i.id for i in cube.get_all(include_archived=True)}
    assert cube.store.outbox() == []
    assert cube.index.ids() == live and cube.index.count() == len(live)
    return live


def top(cube: MemCube, query: str, user: str) -> str:
    return cube.search(query, user_id=user, top_k=1)[0].item.id


def test_a_deferred_write_is_searched_on_the_ann_path_before_the_index_has_it(tmp_path: Path, embedder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(D, "MAX_AGE", 1e9)  # only an explicit flush or close drains
    cube = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    old = cube.add(memory=["Rosa keeps bees on her roof.", "Rosa's bike is red."], user_id="rosa")
    cube.add(memory="Tom's bike is a green tandem.", user_id="tom")
    D.defer_writes(cube.text_mem)
    cube.text_mem.exact_search_max = 0  # every search takes the ANN path (the index + the overlay)
    new = cube.add(memory="Rosa adopted a three-legged cat called Biscuit.", user_id="rosa")[0]
    assert cube.index.count() == 3 and len(cube.store.outbox()) == 1  # acknowledged, not in the index yet
    assert top(cube, "What is the name of Rosa's cat?", "rosa") == new.id  # read-your-writes
    assert new.id not in {h.item.id for h in cube.search("cat called Biscuit", user_id="tom")}  # still scoped
    changed = cube.update(old[1].id, text="Rosa's bike was stolen; she now takes the tram.")
    vec = embedder.embed_query("Rosa takes the tram since her bike was stolen")
    found = dict(cube.text_mem.index.query(vec, 3, VectorFilter(user_id=("rosa",))))
    stored = cube.store.vectors_by_id([changed.id])[changed.id]
    assert found[changed.id] == pytest.approx(float(stored @ vec), abs=1e-5)  # the new vector, not the indexed one
    assert top(cube, "Rosa takes the tram now", "rosa") == changed.id
    cube.delete(old[0].id)
    assert old[0].id not in {h.item.id for h in cube.search("bees on the roof", user_id="rosa")}
    assert D.flush(cube.text_mem) == 3
    live = consistent(cube)
    assert cube.search("three-legged cat", user_id="rosa", top_k=1)[0].item.id == new.id  # from the index alone now
    cube.add(memory="Rosa learns the cello.", user_id="rosa")
    cube.close()  # a clean close drains what is queued
    with MemCube.open(tmp_path / "c", embedder=embedder) as again:
        assert len(consistent(again)) == len(live) + 1
        assert not [e for e in again.audit_log(limit=5) if e["action"] == "reconcile"]  # nothing to replay


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from memos_integrations import MemCube
    from memos_integrations.textual import index_defer as D

    D.MAX_AGE = D.DRAIN_AT = 10**9  # nothing drains before the kill
    cube = MemCube.open({path!r})
    D.defer_writes(cube.text_mem)
    for n, text in enumerate(["Vera flies gliders on Sundays.", "Vera's sister lives in Porto.", "Vera hates coriander."]):
        item = cube.add(memory=text, user_id="vera")[0]
        print(item.id, flush=True)  # acknowledged: the add returned
    assert cube.index.count() == 1, cube.index.count()
    os.kill(os.getpid(), signal.SIGKILL)  # between the SQLite commits and the vector writes
    """
)


def test_kill_9_between_the_commit_and_the_deferred_index_write_loses_and_doubles_nothing(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as cube:
        first = cube.add(memory="Vera repairs clocks.", user_id="vera")[0]
    proc = subprocess.run([sys.executable, "-c", KILLED.format(root=str(ROOT), path=str(path))],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    acknowledged = proc.stdout.split()
    assert len(acknowledged) == 3
    with MemCube.open(path, embedder=embedder) as cube:  # the open replays the outbox
        assert consistent(cube) == {first.id, *acknowledged}
        assert cube.store.count() == 4 and all(len(cube.history(i)) == 1 for i in acknowledged)  # never doubled
        cube.text_mem.exact_search_max = 0  # the index itself holds the replayed vectors
        assert top(cube, "Where does Vera's sister live?", "vera") == acknowledged[1]
        assert top(cube, "Vera hates coriander", "vera") == acknowledged[2]


def test_threads_adding_to_one_deferred_cube_while_it_drains(tmp_path: Path, embedder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(D, "DRAIN_AT", 3)  # background drains run between and during the adds
    cube = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    D.defer_writes(cube.text_mem)
    cube.text_mem.exact_search_max = 0
    ids: list[str] = []
    errors: list[BaseException] = []

    def writer(who: str) -> None:
        try:
            for n in range(6):
                item = cube.add(memory=f"{who} note {n}: {who} visited museum number {n} in town {n * 7}.", user_id=who)[0]
                ids.append(item.id)
                assert item.id in {h.item.id for h in cube.search(f"{who} museum number {n}", user_id=who, top_k=10)}
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in ("ann", "bo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert D.background_drained(cube.text_mem) > 0  # the background thread took part
    D.flush(cube.text_mem)
    assert consistent(cube) == set(ids) and len(ids) == 12 and cube.store.count() == 12
    cube.close()


def test_a_failed_deferred_index_write_keeps_the_row_queued_and_searchable(tmp_path: Path, embedder, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    cube = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    D.defer_writes(cube.text_mem)
    cube.text_mem.exact_search_max = 0
    monkeypatch.setattr(ChromaIndex, "upsert", lambda self, rows, vectors: (_ for _ in ()).throw(RuntimeError("chroma down")))
    item = cube.add(memory="Ilse grows chillies on her balcony.", user_id="ilse")[0]
    with caplog.at_level(logging.WARNING):
        assert D.flush(cube.text_mem) == 0
    assert "chroma down" in caplog.text and "stay queued" in caplog.text
    assert cube.store.outbox() == [(item.id, "upsert")] and cube.index.count() == 0
    assert top(cube, "What does Ilse grow?", "ilse") == item.id  # the overlay still serves it
    monkeypatch.undo()
    assert D.flush(cube.text_mem) == 1
    assert consistent(cube) == {item.id} and cube.store.count() == 1 and len(cube.history(item.id)) == 1
    cube.close()


def test_a_store_without_a_close_hook_keeps_synchronous_writes(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as cube:
        store: Any = cube.store
        del store.before_close  # e.g. the PostgreSQL store: no hook, so no deferral
        D.defer_writes(cube.text_mem)
        assert not D.is_deferred(cube.text_mem)
        cube.add(memory="written through at once")
        assert cube.index.count() == 1
        store.before_close = []


def test_the_overlay_answers_like_the_index_when_nothing_is_queued(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as cube:
        cube.add(memory=["alpha note", "beta note"], user_id="u")
        D.defer_writes(cube.text_mem)
        vec = embedder.embed_query("alpha")
        for k in (0, 1, 5):
            assert cube.text_mem.index.query(vec, k) == cube.index.query(vec, k)


def test_an_add_over_http_is_deferred_and_the_next_search_finds_it(tmp_path: Path, embedder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from memos_integrations.mos import MOS
    from memos_integrations.server import KeyStore, Limits, create_app

    monkeypatch.setattr(D, "MAX_AGE", 1e9)
    mos = MOS(tmp_path / "home", embedder=embedder)
    mos.create_user("mia")
    keys = KeyStore.open(tmp_path / "home" / "mos.db")
    h = {"Authorization": f"Bearer {keys.create('mia')[0]}"}
    with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False)) as client:
        first = client.post("/v1/memories", json={"text": "Mia's locker code is 4412."}, headers=h)
        assert first.status_code == 201, first.text
        cube = mos._cube(mos.list_cubes(user_id="mia")[0]["cube_id"])
        assert D.is_deferred(cube.text_mem)
        cube.text_mem.exact_search_max = 0  # the ANN path: index + overlay
        added = client.post("/v1/memories", json={"text": "Mia parks on level minus two, bay 17."}, headers=h).json()["items"][0]
        assert cube.index.count() <= 1  # acknowledged before the index has it
        hits = client.get("/v1/memories/search", params={"q": "Where does Mia park?", "k": 1}, headers=h).json()["hits"]
        assert hits[0]["item"]["id"] == added["id"]
    keys.close()
    mos.close()  # closing drains the queue
    with MemCube.open(cube.path, embedder=embedder) as again:
        assert consistent(again) == {first.json()["items"][0]["id"], added["id"]}
        assert not [e for e in again.audit_log(limit=5) if e["action"] == "reconcile"]


def test_a_bulk_write_is_indexed_by_the_next_search_and_a_broken_index_falls_back_to_exact(tmp_path: Path, embedder, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(D, "MAX_AGE", 1e9)
    monkeypatch.setattr(D, "DRAIN_AT", 4)
    cube = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    D.defer_writes(cube.text_mem)
    cube.text_mem.exact_search_max = 0
    things = ["a kayak", "a violin", "garden gnomes", "a telescope", "hiking boots", "a sourdough starter"]
    bulk = cube.add(memory=[f"Pia ordered {t} online." for t in things], user_id="pia")
    assert cube.index.count() == 0  # one commit of six rows: not due yet
    assert top(cube, "Pia ordered a telescope", "pia") == bulk[3].id  # the search indexed the bulk first
    assert cube.index.count() == 6 and cube.store.outbox() == []
    monkeypatch.setattr(ChromaIndex, "upsert", lambda self, rows, vectors: (_ for _ in ()).throw(RuntimeError("disk full")))
    places = ["Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Quebec"]
    more = cube.add(memory=[f"Pia's cousin moved to {p}." for p in places], user_id="pia")
    with caplog.at_level(logging.WARNING):  # the index refuses the rows: the search is scored exactly, all found
        assert top(cube, "Pia's cousin moved to Osaka", "pia") == more[4].id
    assert "disk full" in caplog.text and "answered without the index" in caplog.text
    monkeypatch.undo()
    cube.close()
    with MemCube.open(tmp_path / "c", embedder=embedder) as again:
        assert len(consistent(again)) == 12
