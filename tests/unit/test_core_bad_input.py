"""Bad input: each gets a specific MemosError subclass with a message that says what to do, and the cube
stays exactly as it was (stats, the full export and the index outbox compared before and after)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig
from memos_integrations.errors import (
    CubeCorruptedError,
    CubeNotFoundError,
    EmbedderMismatchError,
    EmptyTextError,
    InvalidFilterError,
    InvalidInputError,
    InvalidTypeError,
    ItemNotFoundError,
    MemosError,
    OversizedInputError,
)
from memos_integrations.items import MemoryItem
from tests.unit.conftest import snapshot


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, embedder):  # type: ignore[no-untyped-def]
    """One cube for every case: each case checks that it left the cube exactly as it found it."""
    cube = MemCube.init_from_dir(tmp_path_factory.mktemp("bad") / "cube", embedder=embedder)
    first = cube.add(memory="Alice likes genmaicha tea.", user_id="alice", tags=["tea"])[0]
    cube.add(messages=[{"role": "user", "content": "I moved to Lisbon last month.", "id": "m1"}],
             user_id="alice", session_id="s1", timestamp="8 May 2023")
    cube.relate(first.id, first.id, "self")
    yield cube, first
    cube.close()


ID = "<first>"  # replaced by the id of the seeded memory

CASES: list[tuple[str, type[MemosError], str, Callable[[Any, str], Any]]] = [
    ("empty memory", EmptyTextError, "empty", lambda c, i: c.add(memory="")),
    ("whitespace memory", EmptyTextError, "empty", lambda c, i: c.add(memory=" \n\t ")),
    ("one empty in a batch", EmptyTextError, "empty", lambda c, i: c.add(memory=["fine", "  "])),
    ("empty message", EmptyTextError, "message 1 content", lambda c, i: c.add(
        messages=[{"role": "user", "content": "ok"}, {"role": "user", "content": "   "}], session_id="s1")),
    ("non-str memory", InvalidTypeError, "string", lambda c, i: c.add(memory=42)),
    ("non-str in memory list", InvalidTypeError, "string", lambda c, i: c.add(memory=["ok", 3])),
    ("empty memory list", InvalidTypeError, "non-empty list", lambda c, i: c.add(memory=[])),
    ("messages is a str", InvalidTypeError, "list", lambda c, i: c.add(messages="hello")),
    ("messages is a dict", InvalidTypeError, "list", lambda c, i: c.add(messages={"role": "user", "content": "x"})),
    ("message not a dict", InvalidTypeError, "message 0", lambda c, i: c.add(messages=["hello"])),
    ("message without content", InvalidTypeError, "content", lambda c, i: c.add(messages=[{"role": "user"}])),
    ("message with non-str content", InvalidTypeError, "content", lambda c, i: c.add(messages=[{"content": 5}])),
    ("message with non-dict metadata", InvalidTypeError, "metadata must be a dict", lambda c, i: c.add(
        messages=[{"content": "x", "metadata": [1]}])),
    ("message with non-str name", InvalidTypeError, "name must be a string", lambda c, i: c.add(
        messages=[{"content": "x", "name": 5}])),
    ("both messages and memory", InvalidInputError, "exactly one", lambda c, i: c.add(memory="x", messages=[])),
    ("neither", InvalidInputError, "exactly one", lambda c, i: c.add()),
    # up to max_message_chars a text is kept whole and indexed by parts (tests/unit/test_chat_sized_input.py)
    ("oversized memory", OversizedInputError, "max_message_chars", lambda c, i: c.add(memory="x" * 1_000_001)),
    ("oversized message", OversizedInputError, "message 1 has", lambda c, i: c.add(
        messages=[{"role": "user", "content": "ok"}, {"role": "user", "content": "word " * 200_001}])),
    ("oversized item", OversizedInputError, "max_text_chars", lambda c, i: c.add_items([MemoryItem(text="x" * 32_001)])),
    ("unknown kind", InvalidInputError, "unknown kind", lambda c, i: c.add(memory="x", kind="gossip")),
    ("tags as a string", InvalidTypeError, "lists of strings", lambda c, i: c.add(memory="x", tags="tea")),
    ("sources as a string", InvalidTypeError, "lists of strings", lambda c, i: c.add(memory="x", sources="m1")),
    ("metadata not a dict", InvalidTypeError, "metadata must be a dict", lambda c, i: c.add(memory="x", metadata=[1])),
    ("metadata not JSON", InvalidInputError, "JSON", lambda c, i: c.add(memory="x", metadata={"f": object()})),
    ("metadata NaN", InvalidInputError, "JSON", lambda c, i: c.add(memory="x", metadata={"f": float("nan")})),
    ("user id not a str", InvalidTypeError, "user_id must be a string", lambda c, i: c.add(memory="x", user_id=5)),
    ("session id not a str", InvalidTypeError, "session_id", lambda c, i: c.add(
        messages=[{"role": "user", "content": "x"}], session_id=7)),
    ("unreadable timestamp", InvalidInputError, "ISO 8601", lambda c, i: c.add(memory="x", timestamp="soonish")),
    ("timestamp wrong type", InvalidTypeError, "timestamp", lambda c, i: c.add(memory="x", timestamp=[2023])),
    ("duplicate ids in one write", InvalidInputError, "twice", lambda c, i: c.add_items(
        [MemoryItem(text="a", id="same"), MemoryItem(text="b", id="same")])),
    ("non-item in add_items", InvalidTypeError, "MemoryItem", lambda c, i: c.add_items(["text"])),
    ("item with int id", InvalidTypeError, "ids", lambda c, i: c.add_items([MemoryItem(text="a", id=5)])),  # type: ignore[arg-type]
    ("item with non-str source", InvalidTypeError, "sources", lambda c, i: c.add_items([MemoryItem(text="a", sources=[1])])),  # type: ignore[list-item]
    ("wrong number of vectors", InvalidInputError, "vectors", lambda c, i: c.add_items(
        [MemoryItem(text="a"), MemoryItem(text="b")], vectors=[[0.1] * 384])),
    ("vectors of another dimension", EmbedderMismatchError, "384", lambda c, i: c.add_items(
        [MemoryItem(text="a")], vectors=[[0.1] * 16])),
    ("get non-str id", InvalidTypeError, "strings", lambda c, i: c.get(5)),
    ("get unknown id", ItemNotFoundError, "never added", lambda c, i: c.get("nope")),
    ("history non-str id", InvalidTypeError, "strings", lambda c, i: c.history(5)),
    ("history unknown id", ItemNotFoundError, "nope", lambda c, i: c.history("nope")),
    ("delete non-str id", InvalidTypeError, "id", lambda c, i: c.delete(5)),
    ("delete list with non-str", InvalidTypeError, "strings", lambda c, i: c.delete([i, 5])),
    ("update unknown id", ItemNotFoundError, "nope", lambda c, i: c.update("nope", text="x")),
    ("update to empty text", EmptyTextError, "empty", lambda c, i: c.update(i, text="  ")),
    ("update to non-str text", InvalidTypeError, "string", lambda c, i: c.update(i, text=3)),
    ("update oversized", OversizedInputError, "32000", lambda c, i: c.update(i, text="y" * 40_000)),
    ("update the id", InvalidInputError, "cannot change", lambda c, i: c.update(i, id="other")),
    ("update the version", InvalidInputError, "cannot change", lambda c, i: c.update(i, version=9)),
    ("update unknown field", InvalidInputError, "colour", lambda c, i: c.update(i, colour="red")),
    ("update bad state", InvalidInputError, "states:", lambda c, i: c.update(i, state="alive")),
    ("update bad kind", InvalidInputError, "kinds:", lambda c, i: c.update(i, kind="gossip")),
    ("update tags to a string", InvalidTypeError, "tags", lambda c, i: c.update(i, tags="abc")),
    ("update metadata to a string", InvalidTypeError, "metadata", lambda c, i: c.update(i, metadata="x")),
    ("update user to an int", InvalidTypeError, "user_id", lambda c, i: c.update(i, user_id=5)),
    ("update unreadable time", InvalidInputError, "cannot read", lambda c, i: c.update(i, event_time="later")),
    ("relate to unknown", ItemNotFoundError, "cannot relate", lambda c, i: c.relate(i, "nope", "knows")),
    ("relate without type", InvalidInputError, "non-empty type", lambda c, i: c.relate(i, i, " ")),
    ("relate with a non-number weight", InvalidTypeError, "weight", lambda c, i: c.relate(i, i, "knows", weight="heavy")),
    ("non-str query", InvalidTypeError, "query", lambda c, i: c.search(None)),
    ("top_k zero", InvalidInputError, "top_k", lambda c, i: c.search("tea", top_k=0)),
    ("top_k negative", InvalidInputError, "top_k", lambda c, i: c.search("tea", top_k=-3)),
    ("top_k float", InvalidInputError, "top_k", lambda c, i: c.search("tea", top_k=2.5)),
    ("top_k bool", InvalidInputError, "top_k", lambda c, i: c.search("tea", top_k=True)),
    ("unknown plan", InvalidInputError, "presets", lambda c, i: c.search("tea", plan="warp")),
    ("invalid filter operator", InvalidFilterError, "unknown operator", lambda c, i: c.search(
        "tea", metadata={"x": {"$like": "t%"}})),
    ("inverted time range", InvalidFilterError, "swap", lambda c, i: c.search(
        "tea", time_from="2023-06-01", time_to="2023-05-01")),
    ("query vector of another dimension", EmbedderMismatchError, "384", lambda c, i: c.search(
        "", query_vector=[0.1] * 8)),
]


@pytest.mark.parametrize("name, error, message, call", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_and_leaves_the_cube_as_it_was(seeded, name, error, message, call) -> None:  # type: ignore[no-untyped-def]
    cube, first = seeded
    before = snapshot(cube)
    with pytest.raises(error, match=message) as err:
        call(cube, first.id)
    assert isinstance(err.value, MemosError)
    assert snapshot(cube) == before, f"{name}: the cube changed"


def test_errors_also_subclass_the_builtin_a_caller_expects() -> None:
    assert issubclass(EmptyTextError, ValueError) and issubclass(InvalidTypeError, TypeError)
    assert issubclass(CubeNotFoundError, FileNotFoundError) and issubclass(ItemNotFoundError, LookupError)
    assert issubclass(InvalidFilterError, InvalidInputError)


def test_missing_cube_directory(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CubeNotFoundError, match="init_from_dir"):
        MemCube.open(tmp_path / "absent", embedder=embedder)
    assert not (tmp_path / "absent").exists(), "opening must not create anything"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CubeNotFoundError):
        MemCube.open(tmp_path / "empty", embedder=embedder)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        MemCube.create(tmp_path / "file", embedder=embedder)


def test_create_refuses_an_existing_cube(cube, embedder) -> None:  # type: ignore[no-untyped-def]
    cube.add(memory="keep me")
    with pytest.raises(InvalidInputError, match="already holds a cube"):
        MemCube.create(cube.path, embedder=embedder)
    assert cube.stats()["items"] == 1


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, embedder) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("pristine") / "orig"
    with MemCube.init_from_dir(path, embedder=embedder) as c:
        c.add(memory="Alice likes genmaicha tea.", user_id="alice")
    return path


@pytest.fixture
def closed_cube(pristine: Path, tmp_path: Path) -> Path:
    """A closed cube on disk, each test its own copy to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "orig"))


@pytest.mark.parametrize(
    "header",
    [
        "{not json",
        "",
        "[]",
        '{"format_version": 1}',
        '{"format_version": "1", "embedder": {"name": "x", "dimension": 384, "fingerprint": "f"}, "config": {}}',
        '{"format_version": 1, "embedder": "all-MiniLM-L6-v2", "config": {}}',
        '{"format_version": 1, "embedder": {"name": "all-MiniLM-L6-v2"}, "config": {}}',
        '{"format_version": 99, "embedder": {"name": "x", "dimension": 384, "fingerprint": "f"}, "config": {}}',
        "EMBEDDER_OK_BAD_CONFIG",
    ],
    ids=["syntax", "empty", "list", "missing-keys", "str-version", "str-embedder", "partial-embedder", "newer",
         "bad-config"],
)
def test_corrupted_cube_json(closed_cube: Path, embedder, header: str) -> None:  # type: ignore[no-untyped-def]
    if header == "EMBEDDER_OK_BAD_CONFIG":
        data = json.loads((closed_cube / "cube.json").read_text())
        data["config"]["vector"]["mode"] = "ftp"
        header = json.dumps(data)
    (closed_cube / "cube.json").write_text(header)
    db_before = (closed_cube / "memory.db").read_bytes()
    with pytest.raises(CubeCorruptedError, match="restore|upgrade|invalid config"):
        MemCube.open(closed_cube, embedder=embedder)
    assert (closed_cube / "memory.db").read_bytes() == db_before



@pytest.mark.parametrize("damage", ["garbage", "scribbled-pages", "missing"])
def test_corrupted_memory_db(closed_cube: Path, embedder, damage: str) -> None:  # type: ignore[no-untyped-def]
    db = closed_cube / "memory.db"
    for extra in ("memory.db-wal", "memory.db-shm"):
        (closed_cube / extra).unlink(missing_ok=True)
    if damage == "garbage":
        db.write_bytes(b"this is not sqlite" * 500)
    elif damage == "scribbled-pages":
        data = bytearray(db.read_bytes())
        data[100:4000] = b"\xff" * 3900
        db.write_bytes(bytes(data))
    else:
        db.unlink()
    vectors_before = sorted(p.name for p in (closed_cube / "vectors").rglob("*"))
    with pytest.raises(CubeCorruptedError, match="restore it"):
        MemCube.open(closed_cube, embedder=embedder)
    if damage == "missing":
        assert not db.exists(), "a missing database must not be recreated empty"
    assert sorted(p.name for p in (closed_cube / "vectors").rglob("*")) == vectors_before


def test_mismatched_embedder_is_refused(closed_cube: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from langchain_core.embeddings import DeterministicFakeEmbedding

    header = (closed_cube / "cube.json").read_text()
    for other in (DeterministicFakeEmbedding(size=16), DeterministicFakeEmbedding(size=384)):
        with pytest.raises(EmbedderMismatchError, match="same embedder") as err:
            MemCube.open(closed_cube, embedder=other)
        assert "all-MiniLM-L6-v2" in str(err.value)
    with pytest.raises(InvalidInputError, match="cannot use"):
        MemCube.open(closed_cube, embedder=object())
    assert (closed_cube / "cube.json").read_text() == header
    with MemCube.open(closed_cube, embedder=embedder) as c:  # the right one still opens it
        assert c.stats()["items"] == 1


def test_config_rejects_bad_values() -> None:
    from pydantic import ValidationError

    for bad in ({"cube_id": "a/b"}, {"cube_id": " "}, {"max_text_chars": 0}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            CubeConfig(**bad)


def test_no_secret_is_written_to_cube_json(tmp_path: Path, embedder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as c:
        text = (c.path / "cube.json").read_text()
    assert "sk-very-secret" not in text and "OPENAI_API_KEY" in text  # the variable's name, never its value
