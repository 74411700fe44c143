"""The service surfaces under attack: hostile mem0 exports (history with mixed UTC offsets, nesting
just under JSON's own limit, lone surrogate escapes) are read right or refused with a MemosError before
anything is written; a RemoteCube whose service answers garbage (an httpx transport playing a broken or
hostile server) raises BackendError instead of a raw ValueError / TypeError, and never pages forever.
Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.errors import BackendError, InvalidInputError
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


# -- RemoteCube against a service that answers garbage -----------------------------------------------
httpx = pytest.importorskip("httpx")
_GOOD = {"id": "a", "text": "x"}


def _remote(answer: Any) -> Any:
    """A RemoteCube whose every request gets ``answer`` (a JSON value, or a function of the request)."""
    from memos_integrations.remote import RemoteCube

    def handle(request: Any) -> Any:
        return httpx.Response(200, json=answer(request) if callable(answer) else answer)

    return RemoteCube("http://service.invalid", "key", client=httpx.Client(transport=httpx.MockTransport(handle)))


@pytest.mark.parametrize("item", [
    {"id": "a", "text": "x", "kind": "nope"},           # was ValueError: 'nope' is not a valid Kind
    {"id": "a", "text": "x", "created_at": "yesterday"},  # was ValueError: Invalid isoformat string
    {"id": "a"},                                         # was TypeError: missing 'text'
    {"id": 5, "text": 7},                                # was accepted: a MemoryItem whose text is an int
])
def test_a_memory_the_client_cannot_read_is_a_backend_error(item: dict[str, Any]) -> None:
    with _remote(item) as remote, pytest.raises(BackendError, match="service answered a memory"):
        remote.get("a")


@pytest.mark.parametrize("hit", [{"item": _GOOD, "score": "high"}, {"item": _GOOD, "score": 1, "ranks": [1, 2]}])
def test_a_search_hit_with_a_bad_score_or_ranks_is_a_backend_error(hit: dict[str, Any]) -> None:
    with _remote({"hits": [hit]}) as remote, pytest.raises(BackendError, match="search hit"):  # was ValueError / TypeError
        remote.search("tea")


@pytest.mark.parametrize("stats", [[1, 2], "hello"])
def test_stats_that_are_not_an_object_are_a_backend_error(stats: Any) -> None:
    with _remote(stats) as remote, pytest.raises(BackendError, match="not a JSON object"):  # was TypeError / ValueError
        remote.stats()


def test_a_cursor_that_comes_back_is_refused_instead_of_paging_forever() -> None:
    calls: list[Any] = []

    def answer(request: Any) -> dict[str, Any]:
        calls.append(request)
        if len(calls) > 50:  # the test's own stop: before the fix get_all never ended by itself
            return {"items": [], "next_cursor": None}
        return {"items": [_GOOD], "next_cursor": "same"}

    with _remote(answer) as remote, pytest.raises(BackendError, match="cursor 'same' again"):
        remote.get_all()
    assert len(calls) == 2
