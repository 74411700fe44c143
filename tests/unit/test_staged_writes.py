"""Staged parts of split writes (storage/staged_writes.py): per key, bounded, expiring, taken once."""

from __future__ import annotations

from pathlib import Path

import pytest

from memos_integrations.errors import InvalidInputError, OversizedInputError
from memos_integrations.storage.sql import SQLiteDatabase
from memos_integrations.storage.staged_writes import StagedWrites


def test_parts_are_per_key_bounded_expiring_and_taken_once(tmp_path: Path) -> None:
    parts = StagedWrites(SQLiteDatabase(str(tmp_path / "mos.db")), ttl=10.0, max_bytes=100)
    parts.put("s", "k1", 0, "a" * 40, now=0.0)
    parts.put("s", "k1", 1, "b" * 40, now=0.0)
    with pytest.raises(OversizedInputError):  # 80 held + 40 > 100: the key's bound, whatever the stage
        parts.put("t", "k1", 0, "c" * 40, now=0.0)
    parts.put("s", "k2", 0, "z" * 40, now=0.0)  # another key: its own bound and its own stage of that name
    with pytest.raises(InvalidInputError, match="sent already"):
        parts.put("s", "k1", 1, "b", now=0.0)
    assert parts.take("s", "k1", 2, now=1.0).parts == ["a" * 40, "b" * 40]
    parts.drop("s", "k1")  # the write failed: a retry of the last part takes nothing
    with pytest.raises(InvalidInputError, match="nothing was written"):
        parts.take("s", "k1", 2, now=1.0)
    with pytest.raises(InvalidInputError, match="nothing was written"):  # expired: gone, and the stage dropped
        parts.take("s", "k2", 1, now=11.0)
    parts.put("u", "k1", 0, "d" * 90, now=20.0)  # the expired parts no longer count against anyone
