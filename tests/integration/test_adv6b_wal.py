"""adv6b: a second handle on a cube this process already holds, and another process on the same file.

SQLite keeps its locks as POSIX advisory locks, which belong to the process and are all dropped when
*any* descriptor of that file is closed (https://sqlite.org/howtocorrupt.html, 2.2). Another process
that then closes its connection believes it is the last one and deletes the WAL this process still
writes to: later commits land in an unlinked file, invisible to every other process and gone on a crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from memos_integrations import MemCube


def _sqlite(path: Path, sql: str) -> str:
    """Run ``sql`` in another process's connection (opened, run, committed, closed)."""
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); r = c.execute(sys.argv[2]).fetchall(); "
            "c.commit(); c.close(); print(r)")
    return subprocess.run([sys.executable, "-c", code, str(path), sql], check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


def test_reopening_a_held_cube_keeps_its_wal_for_other_processes(tmp_path: Path, embedder: Any) -> None:
    cube = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    try:
        cube.add(memory="the kettle is on the shelf", user_id="u1")
        MemCube.open(tmp_path / "c", embedder=embedder).close()  # a second handle (a script, a reopen after eviction)
        db = cube.store.path
        _sqlite(db, "SELECT count(*) FROM items")  # any other process: the CLI, a backup, the sqlite3 shell
        assert os.path.exists(f"{db}-wal") and os.path.exists(f"{db}-shm"), "the live WAL was deleted"
        cube.add(memory="the bike is in the hallway", user_id="u1")
        assert _sqlite(db, "SELECT count(*) FROM items") == "[(2,)]"  # a committed write, seen by others
    finally:
        cube.close()
