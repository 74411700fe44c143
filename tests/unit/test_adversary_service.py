"""The service surfaces under attack: hostile mem0 exports (history with mixed UTC offsets, nesting
just under JSON's own limit, lone surrogate escapes). Each is read right or refused with a MemosError
before anything is written. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.errors import InvalidInputError
from memos_integrations.interop.mem0 import import_mem0


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "mem0.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_history_rows_with_different_utc_offsets_keep_their_order(tmp_path: Path, cube: Any) -> None:
    # 10:00+09:00 is 01:00 UTC, before 02:00 UTC; sorted as strings it came after, so the versions swapped
    src = _write(tmp_path, {"results": [{"id": "m1", "memory": "third", "user_id": "u"}], "history": [
        {"memory_id": "m1", "event": "ADD", "new_memory": "first", "created_at": "2024-07-20T10:00:00+09:00"},
        {"memory_id": "m1", "event": "UPDATE", "new_memory": "second", "created_at": "2024-07-20T02:00:00+00:00"},
    ]})
    assert import_mem0(cube, src) == 1
    assert [v.text for v in cube.history("m1")] == ["first", "second", "third"]


def test_metadata_nested_just_under_the_json_limit_is_refused(tmp_path: Path, cube: Any) -> None:
    # 900 levels parse (json's limit is ~1,000) and then overflowed dataclasses.asdict: a RecursionError
    deep = "[" * 900 + "]" * 900
    src = _write(tmp_path, '{"results": [{"id": "m1", "memory": "x", "user_id": "u", "metadata": {"a": ' + deep + "}}]}")
    with pytest.raises(InvalidInputError, match="nested more than"):
        import_mem0(cube, src)
    assert cube.get_all() == []


def test_a_lone_surrogate_escape_is_refused(tmp_path: Path, cube: Any) -> None:
    # json.loads accepts "\ud800"; writing the rows out then raised UnicodeEncodeError
    src = _write(tmp_path, '{"results": [{"id": "m1", "memory": "a\\ud800b", "user_id": "u"}]}')
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        import_mem0(cube, src)
    assert cube.get_all() == []
