"""The storage seam against other processes: several processes opening one cube database that an older
release (or another tool) left in rollback-journal mode, at the same moment. Each test failed before its fix."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path
from typing import Any


def _open(path: str, barrier: Any, results: Any) -> None:
    from memos_integrations.storage.sql import SQLiteDatabase

    barrier.wait()
    try:
        db = SQLiteDatabase(path)
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(f"{type(exc).__name__}: {exc}")
    else:
        mode = str(db.read_one("PRAGMA journal_mode")[0])  # type: ignore[index]
        for n in range(5):  # and write at once, as a cube's migrations do on open
            with db.transaction() as tx:
                tx.execute("INSERT INTO t VALUES (?)", (n,))
        db.close()
        results.put(mode)


def test_processes_opening_a_rollback_journal_database_at_once_all_open_it(tmp_path: Path) -> None:
    # Leaving a rollback journal for WAL needs the file to itself; SQLite answers "database is locked" at
    # once (no busy timeout) to all but one of the processes racing for it. That was a CubeCorruptedError
    # saying "restore it from a dump" for a file that was fine (about one round in eight with 4 processes).
    ctx = mp.get_context("fork")
    failures: list[str] = []
    for round_ in range(20):
        path = tmp_path / f"{round_}.db"
        conn = sqlite3.connect(path)  # journal_mode=delete, as older releases and the sqlite3 shell leave it
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.commit()
        conn.close()
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(path), barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        answers = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(60)
        failures += [a for a in answers if a != "wal"]
    assert failures == []
