"""A COMMIT that fails leaves no transaction open (storage/sql.SQLiteDatabase.transaction).

SQLite keeps the transaction open when its COMMIT fails (a deferred foreign key still violated, SQLITE_BUSY,
a disk I/O error). Before the fix the error escaped as a raw sqlite3 error with no ROLLBACK, so the next
``transaction()`` saw ``in_transaction`` and *joined* it as a nested one: its write was acknowledged but never
committed, and the failed write was still pending beside it. A real failure here, no mock: a deferred foreign key.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from memos_integrations.errors import MemosError
from memos_integrations.storage.sql import SQLiteDatabase

DDL = ("CREATE TABLE parent (id INTEGER PRIMARY KEY);"
       "CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
       "CREATE TABLE note (x TEXT)")


def test_a_failed_commit_rolls_back_and_the_next_write_commits(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = SQLiteDatabase(path)
    db.executescript(DDL)
    with pytest.raises(MemosError, match="not applied.*retry"):
        with db.transaction() as tx:
            tx.execute("INSERT INTO note VALUES ('lost')")
            tx.execute("INSERT INTO child VALUES (1, 99)")  # no parent 99: the COMMIT itself fails
    assert not db.conn.in_transaction
    with db.transaction() as tx:
        tx.execute("INSERT INTO note VALUES ('kept')")
    other = sqlite3.connect(path)  # what another process sees: the next write committed, the failed one absent
    try:
        assert other.execute("SELECT x FROM note").fetchall() == [("kept",)]
        assert other.execute("SELECT count(*) FROM child").fetchone() == (0,)
    finally:
        other.close()
        db.close()
