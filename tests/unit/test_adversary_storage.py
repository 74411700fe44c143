"""The storage seam under attack: hostile ``memory.db`` files (versions no release writes, views and
triggers in place of the cube's tables, a dropped keyword index). Each is refused on open with a
MemosError that says what to do, before anything is written. Each test failed before its fix."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.errors import CubeCorruptedError


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Path:
    """A closed cube with one memory, copied by each test before it is damaged."""
    path = tmp_path_factory.mktemp("adv_storage") / "cube"
    cube = MemCube.init_from_dir(path, embedder=embedder)
    cube.add(memory="the porto train leaves from platform nine", user_id="u")
    cube.close()
    return path


def _damaged(written: Path, tmp_path: Path, sql: str) -> Path:
    path = tmp_path / "cube"
    shutil.copytree(written, path)
    conn = sqlite3.connect(path / "memory.db")
    conn.executescript(sql)
    conn.close()
    return path


def _dump(path: Path) -> str:
    conn = sqlite3.connect(path / "memory.db")
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _files(path: Path) -> dict[str, str]:
    """Every file of the cube but the SQLite database and its WAL side files, by content."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("memory.db")
            and not p.name.endswith(".lock")}


@pytest.mark.parametrize("version", ["'abc'", "x'00'", "-1", "1.5"])
def test_a_schema_version_no_release_writes_is_refused_untouched(
        written: Path, tmp_path: Path, embedder: Any, version: str) -> None:
    # was ValueError (text, blob) or a rerun of step 1 that rewrote the row before step 2 failed (-1, 1.5)
    cube = _damaged(written, tmp_path, f"UPDATE schema_migrations SET version = {version} WHERE component = 'engine'")
    before, files = _dump(cube), _files(cube)
    with pytest.raises(CubeCorruptedError, match="schema_migrations records version .* restore"):
        MemCube.open(cube, embedder=embedder)
    assert _dump(cube) == before
    assert _files(cube) == files


def test_a_text_schema_version_in_meta_of_an_old_cube_is_refused(
        written: Path, tmp_path: Path, embedder: Any) -> None:
    # a cube from before schema_migrations whose meta row was edited: was ValueError
    cube = _damaged(written, tmp_path, "DROP TABLE schema_migrations; UPDATE meta SET value = 'x' WHERE key = 'schema_version'")
    with pytest.raises(CubeCorruptedError, match="schema_version 'x'"):
        MemCube.open(cube, embedder=embedder)


def test_a_trigger_that_copies_every_memory_elsewhere_is_refused(written: Path, tmp_path: Path, embedder: Any) -> None:
    # was opened, and every later add() was copied into the attacker's table
    cube = _damaged(written, tmp_path, "CREATE TABLE stolen (t TEXT); "
                    "CREATE TRIGGER steal AFTER INSERT ON items BEGIN INSERT INTO stolen VALUES (new.text); END")
    before = _dump(cube)
    with pytest.raises(CubeCorruptedError, match="trigger 'steal'.*DROP TRIGGER"):
        MemCube.open(cube, embedder=embedder)
    assert _dump(cube) == before


def test_a_view_in_place_of_the_outbox_is_refused(written: Path, tmp_path: Path, embedder: Any) -> None:
    # was opened; the first add() then failed with a raw sqlite3 error ("cannot modify outbox because it is a view")
    cube = _damaged(written, tmp_path, "ALTER TABLE outbox RENAME TO outbox_real; CREATE VIEW outbox AS SELECT * FROM outbox_real")
    with pytest.raises(CubeCorruptedError, match="view 'outbox'"):
        MemCube.open(cube, embedder=embedder)


def test_a_dropped_keyword_index_is_refused_on_open(written: Path, tmp_path: Path, embedder: Any) -> None:
    # was opened; every search then failed with "keyword terms ['porto'] are not valid FTS5 input"
    cube = _damaged(written, tmp_path, "DROP TABLE items_fts")
    with pytest.raises(CubeCorruptedError, match="no items_fts keyword index"):
        MemCube.open(cube, embedder=embedder)


def test_the_untouched_copy_still_opens(written: Path, tmp_path: Path, embedder: Any) -> None:
    cube = MemCube.open(_damaged(written, tmp_path, ""), embedder=embedder)
    try:
        assert cube.search("porto train", user_id="u")[0].item.text.startswith("the porto train")
    finally:
        cube.close()


def test_a_memory_db_that_links_to_another_database_is_refused_and_that_file_untouched(
        written: Path, tmp_path: Path, embedder: Any) -> None:
    # was opened: the engine's tables (items, outbox, schema_migrations, ...) were created in the other app's file
    cube = tmp_path / "cube"
    shutil.copytree(written, cube)
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE accounts (name TEXT)")
    conn.commit()
    conn.close()
    before = hashlib.sha256(other.read_bytes()).hexdigest()
    for name in ("memory.db", "memory.db-wal", "memory.db-shm"):
        (cube / name).unlink(missing_ok=True)
    (cube / "memory.db").symlink_to(other)
    with pytest.raises(CubeCorruptedError, match="symbolic link"):
        MemCube.open(cube, embedder=embedder)
    assert hashlib.sha256(other.read_bytes()).hexdigest() == before


def test_a_reader_of_face_tables_with_a_hostile_version_gets_a_memos_error(tmp_path: Path, embedder: Any) -> None:
    # a read-only view reads the component's version without migrating: int('abc') was a raw ValueError
    from memos_integrations import MOS
    from memos_integrations.langgraph import MemOSStore

    with MOS(tmp_path / "home", embedder=embedder) as mos:
        mos.create_user("alice")
        mos.create_user("bob")
        mos.create_cube_for_user("notes", owner_id="alice")
        mos.share_cube_with_user("notes", "bob", "read", user_id="alice")
        MemOSStore(mos.cube("notes", user_id="alice")).put(("a",), "k", {"v": 1})
        with mos.cube("notes", user_id="alice").store.db.transaction() as tx:
            tx.execute("UPDATE schema_migrations SET version = 'abc' WHERE component = 'langgraph_store'")
        with pytest.raises(CubeCorruptedError, match="version 'abc' for langgraph_store"):
            MemOSStore(mos.cube("notes", user_id="bob")).search(("a",))
