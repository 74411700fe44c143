"""Staged writes a client abandons are released (storage/staged_writes.py: ``idle``, ``abort``), and written
writes are remembered in the cube's own database for a day (storage/idempotency.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memos_integrations.errors import AccessDeniedError, ConflictError, OversizedInputError
from memos_integrations.storage.idempotency import WriteRecords
from memos_integrations.storage.sql import SQLiteDatabase
from memos_integrations.storage.staged_writes import StagedWrites


def _parts(tmp_path: Path, **kw: float) -> StagedWrites:
    return StagedWrites(SQLiteDatabase(tmp_path / "mos.db"), max_bytes=3000, max_user_bytes=4000,
                        max_total_bytes=6000, **kw)  # type: ignore[arg-type]


def test_an_abandoned_writes_parts_are_released_after_idle_not_after_ttl(tmp_path: Path) -> None:
    parts = _parts(tmp_path, ttl=600, idle=120)
    parts.put("dropped-1", "k1", 0, "x" * 2000, user_id="u", now=0)  # its client's connection died
    with pytest.raises(OversizedInputError):
        parts.put("next-write-1", "k1", 0, "y" * 2000, user_id="u", now=119)  # still held: the key's bound
    parts.put("next-write-2", "k1", 0, "y" * 2000, user_id="u", now=121)  # released 2 minutes after its last part
    assert parts.take("next-write-2", "k1", 1, user_id="u", now=122).parts == ["y" * 2000]


def test_a_write_that_goes_on_is_kept_past_idle_by_each_new_part(tmp_path: Path) -> None:
    parts = _parts(tmp_path, ttl=600, idle=120)
    for n, t in enumerate((0, 100, 200, 300)):  # each part within 2 minutes of the one before: 5 minutes in all
        parts.put("slow-write-1", "k1", n, f"p{n}", user_id="u", now=t)
    assert parts.take("slow-write-1", "k1", 4, user_id="u", now=410).parts == ["p0", "p1", "p2", "p3"]


def test_abort_releases_the_parts_at_once_and_keeps_a_written_writes_answer(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    parts.put("given-up-1", "k1", 0, "x" * 2000, user_id="u")
    assert parts.abort("given-up-1", "k1") == 1
    parts.put("another-1", "k1", 0, "y" * 2000, user_id="u")  # fits: nothing of the first is held
    assert parts.abort("another-1", "k2") == 0  # another key names the same stage: nothing of it is theirs
    parts.take("written-1", "k1", 0, user_id="u", request="r")
    parts.done("written-1", "k1", '{"ids": ["a"]}')
    assert parts.abort("written-1", "k1") == 0
    assert parts.take("written-1", "k1", 0, user_id="u", request="r").answer == '{"ids": ["a"]}'


def test_a_write_record_answers_a_retry_for_a_day_and_refuses_another_body(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "cube.db")
    records, calls = WriteRecords(db), []

    def write(answer: str) -> str:
        calls.append(answer)
        return answer

    assert records.once(db.transaction, "u", "w1", "d1", lambda: write("first"), now=0) == "first"
    assert records.once(db.transaction, "u", "w1", "d1", lambda: write("again"), now=86_000) == "first"
    with pytest.raises(ConflictError, match="another request"):
        records.once(db.transaction, "u", "w1", "d2", lambda: write("other"), now=86_000)
    assert records.once(db.transaction, "v", "w1", "d2", lambda: write("vs"), now=1) == "vs"  # per user
    assert calls == ["first", "vs"]
    # past its day the record is swept by the next write that records one
    assert records.once(db.transaction, "u", "w2", "d1", lambda: write("later"), now=90_000) == "later"
    assert db.scalar("SELECT COUNT(*) FROM idempotent_writes WHERE write_key = 'w1'") == 0


def test_a_refused_write_records_nothing_but_keeps_what_its_refusal_wrote(tmp_path: Path) -> None:
    """A refusal (a MemosError) rolls the write back, audit rows of a denial too: it is run once more on its
    own, so those rows are kept once; the key gets no record and a later write under it is written."""
    db = SQLiteDatabase(tmp_path / "cube.db")
    records = WriteRecords(db)

    def refused() -> str:
        with db.transaction() as tx:  # what the refusal writes (an audit row), in the same (outer) transaction
            tx.execute("INSERT INTO idempotent_writes VALUES ('u', 'audit', 'x', 'x', 1e12)")
        raise AccessDeniedError("refused")

    with pytest.raises(AccessDeniedError, match="refused"):
        records.once(db.transaction, "u", "w1", "d1", refused)
    assert records.find("u", "w1") is None and records.find("u", "audit") == ("x", "x")

    def broken() -> str:  # not a refusal: a bug; nothing is run again, nothing kept
        with db.transaction() as tx:
            tx.execute("INSERT INTO idempotent_writes VALUES ('u', 'half', 'x', 'x', 1e12)")
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        records.once(db.transaction, "u", "w1", "d1", broken)
    assert records.find("u", "half") is None
    assert records.once(db.transaction, "u", "w1", "d1", lambda: "ok") == "ok"


def test_a_busy_database_is_refused_before_the_write_runs(tmp_path: Path) -> None:
    """A refusal before the write ran (the database stayed locked) is not a refusal of the write: nothing runs."""
    from contextlib import contextmanager

    from memos_integrations.errors import CubeLockedError

    db = SQLiteDatabase(tmp_path / "cube.db")
    records, calls = WriteRecords(db), []

    @contextmanager
    def locked():  # type: ignore[no-untyped-def]
        raise CubeLockedError("stayed locked")
        yield

    with pytest.raises(CubeLockedError):
        records.once(locked, "u", "w1", "d1", lambda: calls.append(1) or "x")  # type: ignore[func-returns-value]
    assert calls == []
