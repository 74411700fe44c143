"""Adversary, session 6: a cube deleted and made again at the same path, in the same process.

A notebook's "start over" (``shutil.rmtree(path)`` then ``MemCube.init_from_dir(path)``), a test that reuses
a folder, a cube restored from a copy into the folder it was deleted from: the new cube must get an index of
its own, never the deleted cube's vectors, and every write must reach it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from memos_integrations import MemCube


def test_a_cube_made_again_at_a_deleted_cubes_path_gets_an_index_of_its_own(tmp_path: Path, embedder: Any) -> None:
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as old:
        gone = {it.id for it in old.add(memory=["Alice loves green apples.", "Bob repairs old clocks."], user_id="u")}
    shutil.rmtree(path)
    with MemCube.init_from_dir(path, embedder=embedder) as new:
        item = new.add(memory="Carol sails to Lisbon every summer.", user_id="u")[0]
        indexed = new.index.ids()
        assert not indexed & gone, "the deleted cube's vectors are still served"
        assert new.store.outbox() == [], "the index write failed (queued for a retry that fails the same way)"
        assert indexed == {item.id} and new.index.count() == 1
        new.text_mem.exact_search_max = 0  # the ANN path (a cube past 4096 candidates per filter)
        assert [h.item.id for h in new.search("Who sails to Lisbon?", user_id="u", top_k=1)] == [item.id]
    assert (path / "vectors").is_dir()  # written where the next process will look for it


def test_a_dump_into_the_path_of_a_deleted_dump_works_again(tmp_path: Path, embedder: Any) -> None:
    """A backup job in a long-running process: dump, rotate (delete) the backup, dump to the same path again."""
    with MemCube.init_from_dir(tmp_path / "src", embedder=embedder) as src:
        item = src.add(memory="Alice loves green apples.", user_id="u")[0]
        src.dump(tmp_path / "backup").close()
        shutil.rmtree(tmp_path / "backup")
        with src.dump(tmp_path / "backup") as again:
            assert again.index.ids() == {item.id} and again.store.outbox() == []


def test_an_index_folder_deleted_to_rebuild_it_is_rebuilt_in_the_same_process(tmp_path: Path, embedder: Any) -> None:
    """What CubeCorruptedError's message says to do ("delete <cube>/vectors and open the cube again"), in a
    notebook or a service that keeps running (test_crash.py runs it in a fresh process each time)."""
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as cube:
        cube.add(memory=["Pia fences.", "Pia sails."], user_id="pia")
    shutil.rmtree(path / "vectors")
    with MemCube.open(path, embedder=embedder) as cube:
        new = cube.add(memory="Pia knits.", user_id="pia")[0]
        assert cube.store.outbox() == [], "the index write failed"
        assert new.id in cube.index.ids() and cube.index.count() == 3
    assert (path / "vectors" / "chroma.sqlite3").is_file()  # rebuilt where the next process reads it
