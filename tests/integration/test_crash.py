"""Crash consistency: SQLite is the source of truth, the Chroma index is derived and repaired on open."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memos_integrations import MemCube
from memos_integrations.items import MemoryItem
from memos_integrations.storage.base import IndexRow
from memos_integrations.storage.chroma import ChromaIndex

ROOT = Path(__file__).resolve().parents[2]


def assert_consistent(cube) -> None:  # type: ignore[no-untyped-def]
    live = {i.id for i in cube.get_all(include_archived=True)}
    assert cube.store.outbox() == []
    assert cube.index.ids() == live
    assert cube.index.count() == cube.stats()["items"] == len(live)


def test_index_write_failing_after_the_commit_is_replayed_on_open(tmp_path: Path, embedder, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    cube = MemCube.init_from_dir(path, embedder=embedder)
    before = cube.add(memory="Ines plays the oboe.", user_id="ines")[0]

    def broken(self, rows, vectors):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated crash between the SQLite commit and the vector index")

    monkeypatch.setattr(ChromaIndex, "upsert", broken)
    # the write committed: it is acknowledged, and the failed index update is a warning, not an error
    added = cube.add(memory="Ines adopted a grey cat named Pixel.", user_id="ines")[0]
    assert "simulated crash" in caplog.text and "retried on the next write" in caplog.text
    assert cube.get(added.id).text == "Ines adopted a grey cat named Pixel."
    # committed in SQLite, queued in the outbox, not yet in the index
    pending = cube.store.outbox()
    assert len(pending) == 1 and pending[0][1] == "upsert"
    assert cube.stats()["items"] == 2 and cube.index.count() == 1
    cube.close()
    monkeypatch.undo()

    with MemCube.open(path, embedder=embedder) as again:
        assert_consistent(again)
        new_id = pending[0][0]
        assert again.search("What is the name of Ines's cat?", user_id="ines", top_k=1)[0].item.id == new_id
        again.text_mem.exact_search_max = 0  # the ANN index itself has the replayed vector
        assert again.search("grey cat", user_id="ines", top_k=1)[0].item.id == new_id
        assert again.audit_log(limit=1)[0]["detail"]["replayed"] == 1
        assert again.get(before.id).text == "Ines plays the oboe."


def test_index_delete_failing_is_replayed_too(tmp_path: Path, embedder, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    cube = MemCube.init_from_dir(path, embedder=embedder)
    a, b = cube.add(memory=["first memory", "second memory"])
    monkeypatch.setattr(ChromaIndex, "delete", lambda self, ids: (_ for _ in ()).throw(RuntimeError("down")))
    assert cube.delete(a.id) == 1  # committed and acknowledged; the index delete is queued
    assert "RuntimeError: down" in caplog.text and cube.store.outbox() == [(a.id, "delete")]
    cube.close()
    monkeypatch.undo()
    with MemCube.open(path, embedder=embedder) as again:
        assert_consistent(again)
        assert again.index.ids() == {b.id}


def test_vectors_changed_behind_the_cubes_back_are_reconciled_on_open(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as cube:
        items = cube.add(memory=[f"Note {n} about Jun's travel plans to city number {n}." for n in range(6)], user_id="jun")
        cube.index.delete([items[2].id, items[4].id])  # lost vectors
    with MemCube.open(path, embedder=embedder) as cube:
        assert_consistent(cube)
        entry = cube.audit_log(limit=1)[0]
        assert entry["action"] == "reconcile" and entry["detail"] == {"replayed": 0, "added": 2, "removed": 0}
        cube.index.upsert([IndexRow("orphan-1", user_id="jun"), IndexRow("orphan-2", user_id="jun")],
                          embedder.embed_documents(["a", "b"]))
    with MemCube.open(path, embedder=embedder) as cube:
        assert_consistent(cube)
        assert cube.audit_log(limit=1)[0]["detail"] == {"replayed": 0, "added": 0, "removed": 2}
        cube.text_mem.exact_search_max = 0
        assert {h.item.id for h in cube.search("travel plans", user_id="jun", top_k=10)} == {i.id for i in items}
    with MemCube.open(path, embedder=embedder) as cube:  # a clean open writes no reconcile entry
        assert cube.audit_log(limit=1)[0]["detail"] == {"replayed": 0, "added": 0, "removed": 2}


def test_reindex_rebuilds_an_emptied_index(cube, embedder) -> None:  # type: ignore[no-untyped-def]
    items = cube.add(memory=["Kai surfs at dawn.", "Kai brews coffee.", "Kai fixes bikes."], user_id="kai")
    cube.delete(items[1].id)
    cube.index.reset()
    assert cube.index.count() == 0
    assert cube.reindex() == 2
    assert_consistent(cube)
    cube.index.reset()
    assert cube.reindex(reembed=True) == 2
    assert_consistent(cube)
    assert [h.version for h in cube.history(items[0].id)] == [1]  # re-embedding writes no new version
    cube.text_mem.exact_search_max = 0
    assert cube.search("surfing", user_id="kai", top_k=1)[0].item.id == items[0].id


CRASHER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from memos_integrations import MemCube
    from memos_integrations.textual.store import SQLiteStore

    cube = MemCube.open({path!r})
    original = SQLiteStore.write_items

    def crash_midway(self, items, vectors):
        with self.transaction():
            original(self, items[:2], None if vectors is None else vectors[:2])  # half the batch is written
            os._exit(17)  # the process dies inside the transaction: no commit, no cleanup

    SQLiteStore.write_items = crash_midway
    cube.add(memory=["crash batch one", "crash batch two", "crash batch three", "crash batch four"], user_id="lee")
    """
)


def test_process_killed_inside_a_batch_write_leaves_no_partial_batch(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as cube:
        kept = cube.add(memory=["Lee climbs.", "Lee cooks ramen."], user_id="lee")
        before = list(cube.export_jsonl())
    script = CRASHER.format(root=str(ROOT), path=str(path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr[-2000:]
    with MemCube.open(path, embedder=embedder) as cube:
        assert list(cube.export_jsonl()) == before  # nothing of the batch: not the items, versions nor vectors
        assert {i.id for i in cube.get_all()} == {i.id for i in kept}
        assert cube.store.read("SELECT COUNT(*) FROM vectors")[0][0] == 2
        assert_consistent(cube)
        cube.add(memory="Lee is fine after the crash.", user_id="lee")  # and the cube keeps working
        assert_consistent(cube)


def test_an_exception_inside_a_batch_rolls_the_whole_batch_back(cube, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.conftest import snapshot

    cube.add(memory="already there")
    before = snapshot(cube)
    bad = [MemoryItem(text="fine"), MemoryItem(text="also fine"), MemoryItem(text="bad", metadata={"x": float("inf")})]
    with pytest.raises(Exception, match="JSON"):
        cube.add_items(bad)
    assert snapshot(cube) == before


def test_a_failed_index_write_heals_on_the_next_write_in_the_same_process(cube, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ChromaIndex, "upsert", lambda self, rows, vectors: (_ for _ in ()).throw(RuntimeError("down")))
    cube.add(memory="Omar restores old radios.", user_id="omar")  # stored; the index write stays queued
    assert len(cube.store.outbox()) == 1
    monkeypatch.undo()
    second = cube.add(memory="Omar sings in a choir.", user_id="omar")[0]
    assert_consistent(cube)  # the outbox row of the failed write went out with the next one
    assert len(cube.index.ids()) == 2 and second.id in cube.index.ids()


def test_a_failing_embedder_writes_nothing(cube, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.conftest import snapshot

    cube.add(memory="already there")
    before = snapshot(cube)
    monkeypatch.setattr(cube.embedder, "embed_documents", lambda texts: (_ for _ in ()).throw(ConnectionError("api down")))
    with pytest.raises(ConnectionError):
        cube.add(memory=["a", "b"])
    with pytest.raises(ConnectionError):
        cube.update(cube.get_all()[0].id, text="changed")
    assert snapshot(cube) == before


DAMAGED_INDEX = textwrap.dedent(
    """
    import shutil, sys
    sys.path.insert(0, {root!r})
    from memos_integrations import MemCube
    from memos_integrations.errors import CubeCorruptedError

    try:
        cube = MemCube.open({path!r})
        print("opened", cube.index.count(), cube.stats()["items"])
    except CubeCorruptedError as exc:
        print("corrupted:", "delete" in str(exc) and "rebuild" in str(exc))
    """
)


def test_a_damaged_vector_index_is_a_clear_error_and_a_deleted_one_is_rebuilt(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    # a fresh process each time: Chroma keeps one client per directory inside a process
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as cube:
        cube.add(memory=["Pia fences.", "Pia sails.", "Pia knits."], user_id="pia")
    (path / "vectors" / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    run = lambda: subprocess.run([sys.executable, "-c", DAMAGED_INDEX.format(root=str(ROOT), path=str(path))],  # noqa: E731
                                 capture_output=True, text=True, timeout=120)
    out = run()
    assert out.stdout.strip() == "corrupted: True", out.stderr[-2000:]
    import shutil

    shutil.rmtree(path / "vectors")  # what the message says to do
    out = run()
    assert out.stdout.strip() == "opened 3 3", out.stderr[-2000:]  # rebuilt from SQLite on open
