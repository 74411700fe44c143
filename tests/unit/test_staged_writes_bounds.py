"""Staged writes (storage/staged_writes.py): per-user and service-wide bounds, answers kept for retries, the
sweep's index on a mos.db written before it. Each test failed on the module before these were added."""

from __future__ import annotations

from pathlib import Path

import pytest

from memos_integrations.errors import ConflictError, InvalidInputError, OversizedInputError
from memos_integrations.storage.migrations import migrate
from memos_integrations.storage.sql import SQLiteDatabase
from memos_integrations.storage.staged_writes import STEPS, StagedWrites, StagingFullError


def test_a_user_with_many_keys_and_many_users_are_bounded(tmp_path: Path) -> None:
    parts = StagedWrites(SQLiteDatabase(str(tmp_path / "mos.db")), ttl=10.0, max_bytes=100, max_user_bytes=150,
                         max_total_bytes=250)
    parts.put("s", "k1", 0, "a" * 90, user_id="alice", now=0.0)
    with pytest.raises(OversizedInputError, match="this user's keys"):  # a second key of alice: her bound
        parts.put("s", "k2", 0, "b" * 90, user_id="alice", now=0.0)
    parts.put("s", "k3", 0, "c" * 90, user_id="bob", now=0.0)
    with pytest.raises(StagingFullError, match="every user of this service"):  # 180 held + 90 > 250, whoever
        parts.put("s", "k4", 0, "d" * 90, user_id="carol", now=0.0)
    parts.put("s", "k4", 0, "d" * 90, user_id="carol", now=11.0)  # what expired counts for no one


def test_the_last_part_sent_again_answers_the_write_and_writes_nothing(tmp_path: Path) -> None:
    parts = StagedWrites(SQLiteDatabase(str(tmp_path / "mos.db")), ttl=10.0)
    parts.put("s", "k1", 0, "p0", user_id="alice", now=0.0)
    assert parts.take("s", "k1", 1, user_id="alice", now=1.0).parts == ["p0"]
    with pytest.raises(ConflictError, match="outcome is unknown"):  # while the first is being written
        parts.take("s", "k1", 1, user_id="alice", now=1.5)
    parts.done("s", "k1", '{"ids": ["a"]}', now=2.0)
    again = parts.take("s", "k1", 1, user_id="alice", now=3.0)
    assert again.parts == [] and again.answer == '{"ids": ["a"]}'
    with pytest.raises(InvalidInputError, match="written already"):  # no part joins a written write
        parts.put("s", "k1", 1, "p1", user_id="alice", now=3.0)
    with pytest.raises(InvalidInputError, match="nothing was written"):  # another key: not its write, nor its answer
        parts.take("s", "k2", 1, user_id="alice", now=3.0)
    # a one-part write (no earlier parts): the same record, so a retry is an answer, not a second write
    assert parts.take("one", "k1", 0, user_id="alice", now=4.0).parts == []
    parts.done("one", "k1", '{"ids": ["b"]}', now=4.0)
    assert parts.take("one", "k1", 0, user_id="alice", now=5.0).answer == '{"ids": ["b"]}'
    # the answer is kept for ttl seconds after the write, then the stage id is free again
    assert parts.take("one", "k1", 0, user_id="alice", now=15.0).answer is None


def test_a_failed_write_forgets_its_stage(tmp_path: Path) -> None:
    parts = StagedWrites(SQLiteDatabase(str(tmp_path / "mos.db")), ttl=10.0)
    assert parts.take("one", "k1", 0, user_id="alice", now=0.0).parts == []
    parts.drop("one", "k1")  # the cube refused it: a retry runs it again (and is refused again)
    assert parts.take("one", "k1", 0, user_id="alice", now=0.0).answer is None


def test_a_mos_db_from_before_gets_the_sweep_index_and_keeps_its_parts(tmp_path: Path) -> None:
    db = SQLiteDatabase(str(tmp_path / "mos.db"))
    migrate(db, "staged_writes", {"sqlite": STEPS["sqlite"][:1]})  # the table as the last release made it
    with db.transaction() as tx:
        tx.execute("INSERT INTO staged_parts (stage, key_id, part, body, bytes, expires) VALUES ('s', 'k1', 0, 'old', 3, 100.0)")
    parts = StagedWrites(db, ttl=10.0)
    names = {r[0] for r in db.read("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'staged_parts'")}
    assert {"staged_parts_expires", "staged_parts_user"} <= names
    plan = " ".join(str(r[-1]) for r in db.read("EXPLAIN QUERY PLAN DELETE FROM staged_parts WHERE expires < ?", (1.0,)))
    assert "staged_parts_expires" in plan, plan
    assert parts.take("s", "k1", 1, now=50.0).parts == ["old"]  # a part staged before the upgrade is still there


def test_answers_kept_for_retries_count_against_the_bounds(tmp_path: Path) -> None:
    parts = StagedWrites(SQLiteDatabase(str(tmp_path / "mos.db")), ttl=10.0, max_bytes=100, max_user_bytes=1000,
                         max_total_bytes=1000)
    for n in range(2):  # one-part writes whose answers (60 bytes each) are kept for their retries
        assert parts.take(f"w{n}", "k1", 0, user_id="alice", now=0.0).parts == []
        parts.done(f"w{n}", "k1", "x" * 60, now=0.0)
    with pytest.raises(OversizedInputError, match="recent writes' answers"):  # 120 held > 100: no new write
        parts.take("w2", "k1", 0, user_id="alice", now=1.0)
    assert parts.take("w0", "k1", 0, user_id="alice", now=1.0).answer == "x" * 60  # retries still answered
    assert parts.take("w2", "k1", 0, user_id="alice", now=11.0).parts == []  # once they expire, writes go on


def test_a_stage_id_used_again_for_another_write_is_refused_not_answered(tmp_path: Path) -> None:
    parts = StagedWrites(SQLiteDatabase(str(tmp_path / "mos.db")), ttl=10.0)
    assert parts.take("s", "k1", 0, user_id="alice", request="digest-a", now=0.0).parts == []
    parts.done("s", "k1", '{"ids": ["a"]}', now=0.0)
    assert parts.take("s", "k1", 0, user_id="alice", request="digest-a", now=1.0).answer == '{"ids": ["a"]}'
    with pytest.raises(InvalidInputError, match="new stage id"):  # another write under that id: not its answer
        parts.take("s", "k1", 0, user_id="alice", request="digest-b", now=1.0)
