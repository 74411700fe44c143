"""mem0 import and export: files written to match mem0's documented shapes (``get_all`` results with
user/agent/run ids, hash, metadata, categories, times; ``history`` rows of ADD / UPDATE / DELETE), round
trips, and hostile files refused with nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.errors import InvalidInputError, InvalidTypeError, MemosError
from memos_integrations.interop import export_to, import_from
from memos_integrations.interop.mem0 import export_mem0, import_mem0
from memos_integrations.items import Lifecycle

TEA = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
CITY = "7f1d4b7e-1111-4c2b-9a55-0f1e2d3c4b5a"
GONE = "0b9e2f55-2222-4c2b-9a55-0f1e2d3c4b5a"


def mem0_export() -> dict[str, Any]:
    """What mem0's Memory.get_all returns, plus the history rows of each memory."""
    return {
        "results": [
            {"id": TEA, "memory": "Prefers genmaicha over sencha", "hash": "d41d8cd98f00b204e9800998ecf8427e",
             "metadata": {"source": "chat", "confidence": "high"}, "categories": ["food", "preferences"],
             "user_id": "alice", "agent_id": "tea-bot", "run_id": "run-7", "app_id": None,
             "created_at": "2024-07-20T01:30:00.000000-07:00", "updated_at": "2024-07-21T09:00:00.000000-07:00"},
            {"id": CITY, "memory": "Lives in Porto", "hash": "x", "metadata": None, "user_id": "alice",
             "created_at": "2024-07-22T10:00:00Z", "updated_at": "2024-07-22T10:00:00Z"},
        ],
        "history": [
            {"id": "h1", "memory_id": TEA, "old_memory": None, "new_memory": "Likes green tea", "event": "ADD",
             "created_at": "2024-07-20T01:30:00-07:00", "updated_at": None, "is_deleted": 0, "actor_id": None, "role": "user"},
            {"id": "h2", "memory_id": TEA, "old_memory": "Likes green tea", "new_memory": "Prefers genmaicha over sencha",
             "event": "UPDATE", "created_at": "2024-07-21T09:00:00-07:00", "updated_at": None, "is_deleted": 0},
            {"id": "h3", "memory_id": GONE, "old_memory": None, "new_memory": "Owns a cat", "event": "ADD",
             "created_at": "2024-07-19T08:00:00Z", "is_deleted": 0},
            {"id": "h4", "memory_id": GONE, "old_memory": "Owns a cat", "new_memory": None, "event": "DELETE",
             "created_at": "2024-07-23T08:00:00Z", "is_deleted": 1},
        ],
    }


def write(tmp_path: Path, data: Any, name: str = "mem0.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_import_reads_memories_ids_times_metadata_and_history(cube: Any, tmp_path: Path) -> None:
    assert import_mem0(cube, write(tmp_path, mem0_export())) == 3
    tea = cube.get(TEA)
    assert (tea.text, tea.user_id, tea.agent_id, tea.session_id) == ("Prefers genmaicha over sencha", "alice", "tea-bot", "run-7")
    assert tea.metadata == {"source": "chat", "confidence": "high", "mem0": {"categories": ["food", "preferences"]}}
    assert tea.created_at == datetime.fromisoformat("2024-07-20T01:30:00-07:00")  # the same instant (stored as UTC)
    assert [(v.version, v.text) for v in cube.history(TEA)] == [(1, "Likes green tea"), (2, "Prefers genmaicha over sencha")]
    assert [v.updated_at for v in cube.history(TEA)] == [datetime.fromisoformat("2024-07-20T01:30:00-07:00"),
                                                         datetime.fromisoformat("2024-07-21T09:00:00-07:00")]
    assert [v.text for v in cube.history(CITY)] == ["Lives in Porto"]
    assert {i.id for i in cube.get_all()} == {TEA, CITY}  # the deleted one is not live ...
    assert [v.state for v in cube.history(GONE)] == [Lifecycle.GENERATED, Lifecycle.DELETED]  # ... its history is kept
    assert cube.search("which tea does she like?", top_k=1)[0].item.id == TEA  # indexed like any memory


def test_import_reads_a_bare_list_and_history_by_memory(cube: Any, tmp_path: Path) -> None:
    data = mem0_export()
    assert import_from("mem0", cube, write(tmp_path, data["results"])) == 2
    by_id = {TEA: [{"old_memory": None, "new_memory": "Likes tea", "event": "add", "created_at": 1721464200000}]}
    other = tmp_path / "other"
    other.mkdir()
    from memos_integrations import MemCube

    with MemCube.init_from_dir(tmp_path / "c2", embedder=cube.embedder) as second:
        assert import_mem0(second, write(other, {"results": data["results"][:1], "history": by_id})) == 1
        assert [v.text for v in second.history(TEA)] == ["Likes tea", "Prefers genmaicha over sencha"]
        assert second.history(TEA)[0].updated_at.year == 2024  # epoch milliseconds, as mem0's platform writes


def test_round_trip_through_the_mem0_shape(cube: Any, make_cube: Callable[..., Any], tmp_path: Path) -> None:
    [tea] = cube.add(memory="Alice likes genmaicha.", user_id="alice", session_id="s1", kind="preference",
                     tags=["tea"], metadata={"source": "chat"}, timestamp="2024-05-08T13:56")
    cube.update(tea.id, text="Alice likes sencha now.")
    [cat] = cube.add(memory="Alice had a cat.", user_id="alice", agent_id="bot")
    cube.delete(cat.id)
    cube.add(memory="Bob plays cello.", user_id="bob")
    first = tmp_path / "first.json"
    assert export_mem0(cube, first) == 2
    exported = json.loads(first.read_text())
    row = next(r for r in exported["results"] if r["id"] == tea.id)
    assert row["memory"] == "Alice likes sencha now." and row["run_id"] == "s1" and len(row["hash"]) == 32
    assert [h["event"] for h in exported["history"] if h["memory_id"] == cat.id] == ["ADD", "DELETE"]

    copy = make_cube("copy")
    assert import_mem0(copy, first) == 3
    for original in cube.get_all():
        again = copy.get(original.id)
        for field in ("text", "kind", "user_id", "agent_id", "session_id", "tags", "metadata", "event_time",
                      "created_at", "updated_at", "version"):
            assert getattr(again, field) == getattr(original, field), field
    assert [(v.text, v.state) for v in copy.history(cat.id)] == [(v.text, v.state) for v in cube.history(cat.id)]
    second = tmp_path / "second.json"
    export_to("mem0", copy, second)
    again_exported = json.loads(second.read_text())
    assert again_exported["results"] == exported["results"]  # a second trip changes nothing
    for a, b in zip(again_exported["history"], exported["history"]):
        assert a == b, (a, b)


HOSTILE: list[tuple[str, Any, type[MemosError], str]] = [
    ("not an object", "just a string", InvalidTypeError, "mem0 export"),
    ("results not a list", {"results": {"a": 1}}, InvalidTypeError, "'results'"),
    ("memory not a string", {"results": [{"id": "a", "memory": 42}]}, InvalidTypeError, r"results\[0\]\.memory"),
    ("empty memory", {"results": [{"id": "a", "memory": "  "}]}, InvalidTypeError, "non-empty"),
    ("no id", {"results": [{"memory": "x"}]}, InvalidInputError, r"results\[0\]\.id is required"),
    ("id with a newline", {"results": [{"id": "a\nb", "memory": "x"}]}, InvalidInputError, "printable"),
    ("id twice", {"results": [{"id": "a", "memory": "x"}, {"id": "a", "memory": "y"}]}, InvalidInputError, "twice"),
    ("metadata a list", {"results": [{"id": "a", "memory": "x", "metadata": [1]}]}, InvalidTypeError, "metadata"),
    ("bad time", {"results": [{"id": "a", "memory": "x", "created_at": "yesterday"}]}, InvalidInputError, "ISO 8601"),
    ("time out of range", {"results": [{"id": "a", "memory": "x", "created_at": "0001-01-01T00:00:00Z"}]},
     InvalidInputError, "outside the times"),
    ("unknown event", {"results": [], "history": [{"memory_id": "a", "event": "MERGE", "new_memory": "x"}]},
     InvalidInputError, "MERGE"),
    ("history not rows", {"results": [], "history": "x"}, InvalidTypeError, "history"),
    ("user id an object", {"results": [{"id": "a", "memory": "x", "user_id": {"$ne": 1}}]}, InvalidTypeError, "user_id"),
    ("huge integer in metadata", {"results": [{"id": "a", "memory": "x", "metadata": {"n": 2**70}}]},
     InvalidInputError, "2\\*\\*63"),
]


@pytest.mark.parametrize("name,data,error,match", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_files_are_refused_and_nothing_is_written(cube: Any, tmp_path: Path, name: str, data: Any,
                                                          error: type[MemosError], match: str) -> None:
    with pytest.raises(error, match=match):
        import_mem0(cube, write(tmp_path, data))
    assert cube.stats()["items"] == 0 and cube.stats()["versions"] == 0


def test_hostile_bytes_are_refused(cube: Any, tmp_path: Path) -> None:
    cases: list[tuple[bytes, str]] = [
        (b'{"results": [{"id": "a", "memory": "x", "metadata": {"v": NaN}}]}', "NaN"),
        (b"\x80\x04\x95\x00\x00", "pickle"),
        (b"cos\nsystem\n(S'touch pwned'\ntR.", "not JSON"),  # a protocol-0 pickle: refused as text, never loaded
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ]
    for n, (raw, match) in enumerate(cases):
        path = tmp_path / f"bad{n}.json"
        path.write_bytes(raw)
        with pytest.raises(InvalidInputError, match=match):
            import_mem0(cube, path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    big = write(tmp_path, {"results": [{"id": str(i), "memory": "x" * 100} for i in range(200)]})
    with pytest.raises(InvalidInputError, match="over the 1,000 an import reads"):
        import_mem0(cube, big, max_bytes=1000)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        import_mem0(cube, tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        import_mem0(cube, tmp_path / "missing.json")
    with pytest.raises(InvalidInputError, match="unknown import format"):
        import_from("zep", cube, big)
    assert cube.stats()["items"] == 0


def test_importing_the_same_ids_with_another_history_is_refused(cube: Any, tmp_path: Path) -> None:
    import_mem0(cube, write(tmp_path, mem0_export()))
    changed = mem0_export()
    changed["results"][1]["memory"] = "Lives in Lisbon"
    changed["history"] = []
    with pytest.raises(InvalidInputError, match="already exist"):
        import_mem0(cube, write(tmp_path, changed, "changed.json"))
    assert cube.get(CITY).text == "Lives in Porto"
