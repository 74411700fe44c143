"""Validation at the edge: values some later read path cannot represent are refused before anything
is written, with a MemosError that says what to do, and the cube stays exactly as it was
(issue 15, items 10-13 and 15). Every case here failed on main with a raw error or a poisoned cube."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.errors import InvalidFilterError, InvalidInputError, InvalidTypeError, MemosError
from memos_integrations.items import MAX_TIME, MIN_TIME, MemoryItem, utcnow
from memos_integrations.textual.filters import MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH, MemoryFilter
from memos_integrations.textual.read import parse_timestamp, resolve_relative
from tests.unit.conftest import snapshot

LATE = "9999-12-31T23:59:59-14:00"  # 10000-01-01 in UTC
EARLY = "0001-01-01T00:00:00+14:00"  # year 0 in UTC
MINUS_14 = timezone(timedelta(hours=-14))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    cube = MemCube.init_from_dir(tmp_path_factory.mktemp("edges") / "cube", embedder=embedder)
    first = cube.add(memory="Alice likes genmaicha tea.", user_id="alice", tags=["tea"])[0]
    yield cube, first
    cube.close()


def nested(depth: int, leaf: Any = 1, key: str = "k") -> Any:
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def _import_row(tmp_path: Path, **fields: Any) -> Path:
    item = MemoryItem(text="imported", id="imp-1").to_dict()
    item.update(fields)
    path = tmp_path / f"rows-{abs(hash(json.dumps(fields, default=str)))}.jsonl"
    path.write_text(json.dumps({"type": "item", "item": item}) + "\n", encoding="utf-8")
    return path


Case = tuple[str, type[MemosError], str, Callable[[Any, str, Path], Any]]
CASES: list[Case] = [
    # item 10: times beyond what every read path represents
    ("add: timestamp past year 9999 in UTC", InvalidInputError, "outside the times",
     lambda c, i, t: c.add(memory="x", timestamp=LATE)),
    ("add: timestamp before year 1 in UTC", InvalidInputError, "outside the times",
     lambda c, i, t: c.add(memory="x", timestamp=EARLY)),
    ("add: message timestamp", InvalidInputError, "outside the times",
     lambda c, i, t: c.add(messages=[{"role": "user", "content": "hi", "timestamp": LATE}])),
    ("add: datetime.max", InvalidInputError, "outside the times",
     lambda c, i, t: c.add(memory="x", timestamp=datetime.max)),
    ("add_items: aware datetime", InvalidInputError, "event_time",
     lambda c, i, t: c.add_items([MemoryItem(text="x", event_time=datetime(9999, 12, 31, 23, tzinfo=MINUS_14))])),
    ("add_items: created_at", InvalidInputError, "created_at",
     lambda c, i, t: c.add_items([MemoryItem(text="x", created_at=datetime.min)])),
    ("update: valid_to", InvalidInputError, "outside the times", lambda c, i, t: c.update(i, valid_to=LATE)),
    ("import: event_time", InvalidInputError, "outside the times",
     lambda c, i, t: c.import_jsonl(_import_row(t, event_time=LATE))),
    ("search: time bound", InvalidInputError, "outside the times", lambda c, i, t: c.search("tea", time_to=LATE)),
    # item 11: NaN / infinite vectors
    ("add_items: NaN vector", InvalidInputError, "NaN or infinite",
     lambda c, i, t: c.add_items([MemoryItem(text="x")], vectors=[[math.nan] * 384])),
    ("add_items: infinite vector", InvalidInputError, "NaN or infinite",
     lambda c, i, t: c.add_items([MemoryItem(text="x")], vectors=[[math.inf] + [0.0] * 383])),
    ("search: NaN query vector", InvalidInputError, "NaN or infinite",
     lambda c, i, t: c.search("", query_vector=[math.nan] * 384)),
    # item 13: strings UTF-8 cannot encode
    ("add: lone surrogate in metadata", InvalidInputError, "UTF-8",
     lambda c, i, t: c.add(memory="x", metadata={"note": "bad \udc80 byte"})),
    ("add: lone surrogate in a metadata key", InvalidInputError, "UTF-8",
     lambda c, i, t: c.add(memory="x", metadata={"\ud800": 1})),
    ("add: lone surrogate in text", InvalidInputError, "UTF-8", lambda c, i, t: c.add(memory="bad \udc80")),
    ("add: lone surrogate in a tag", InvalidInputError, "UTF-8", lambda c, i, t: c.add(memory="x", tags=["\udc80"])),
    ("add: lone surrogate in user id", InvalidInputError, "UTF-8", lambda c, i, t: c.add(memory="x", user_id="\udc80")),
    ("add: lone surrogate in a message", InvalidInputError, "UTF-8",
     lambda c, i, t: c.add(messages=[{"role": "user", "content": "ok", "name": "\udc80"}])),
    ("search: lone surrogate in the query", InvalidInputError, "UTF-8", lambda c, i, t: c.search("tea \udc80")),
    ("search: lone surrogate in a filter", InvalidFilterError, "UTF-8",
     lambda c, i, t: c.search("tea", metadata={"k": "\udc80"})),
    ("update: lone surrogate", InvalidInputError, "UTF-8", lambda c, i, t: c.update(i, metadata={"k": "\udc80"})),
    # item 15: integers, depth, sizes
    ("search: top_k 10**20", InvalidInputError, "top_k", lambda c, i, t: c.search("tea", top_k=10**20)),
    ("get_all: limit 10**30", InvalidInputError, "limit", lambda c, i, t: c.get_all(limit=10**30)),
    ("get_all: offset 10**30", InvalidInputError, "offset", lambda c, i, t: c.get_all(offset=10**30)),
    ("search: filter value 10**30", InvalidFilterError, "2\\*\\*63",
     lambda c, i, t: c.search("tea", metadata={"n": 10**30})),
    ("search: filter $in value 10**30", InvalidFilterError, "2\\*\\*63",
     lambda c, i, t: c.search("tea", metadata={"n": {"$in": [1, 10**30]}})),
    ("search: filter NaN", InvalidFilterError, "finite", lambda c, i, t: c.search("tea", metadata={"n": {"$gt": math.nan}})),
    ("add_items: confidence 10**400", InvalidInputError, "confidence",
     lambda c, i, t: c.add_items([MemoryItem(text="x", confidence=10**400)])),
    ("add_items: confidence inf", InvalidInputError, "confidence",
     lambda c, i, t: c.add_items([MemoryItem(text="x", confidence=math.inf)])),
    ("add: metadata integer 10**30", InvalidInputError, "2\\*\\*63", lambda c, i, t: c.add(memory="x", metadata={"n": 10**30})),
    ("search: $not nested 30 deep", InvalidFilterError, "nested",
     lambda c, i, t: c.search("tea", metadata=nested(30, {"a": 1}, "$not"))),
    ("search: $or of 20,000 branches", InvalidFilterError, "conditions",
     lambda c, i, t: c.search("tea", metadata={"$or": [{"a": n} for n in range(20_000)]})),
    ("search: 40,000 tags", InvalidFilterError, "conditions",
     lambda c, i, t: c.search("tea", tags=[f"t{n}" for n in range(40_000)])),
    ("search: $in of 40,000 values", InvalidFilterError, "values",
     lambda c, i, t: c.search("tea", metadata={"a": {"$in": list(range(40_000))}})),
    ("add: 40,000 tags", InvalidInputError, "tags", lambda c, i, t: c.add(memory="x", tags=[f"t{n}" for n in range(40_000)])),
    ("add: metadata nested 5,000 deep", InvalidInputError, "nested", lambda c, i, t: c.add(memory="x", metadata=nested(5000))),
    ("relate: NaN weight", InvalidInputError, "finite", lambda c, i, t: c.relate(i, i, "knows", weight=math.nan)),
    ("relate: weight 10**400", InvalidInputError, "weight", lambda c, i, t: c.relate(i, i, "knows", weight=10**400)),
    ("relate: metadata nested 5,000 deep", InvalidInputError, "nested",
     lambda c, i, t: c.relate(i, i, "knows", deep=nested(5000))),
    # import validates rows like add does
    ("import: empty text", InvalidInputError, "empty", lambda c, i, t: c.import_jsonl(_import_row(t, text="  "))),
    ("import: string confidence", InvalidTypeError, "confidence",
     lambda c, i, t: c.import_jsonl(_import_row(t, confidence="high"))),
    ("import: metadata NaN", InvalidInputError, "JSON", lambda c, i, t: c.import_jsonl(_import_row(t, metadata={"x": math.nan}))),
    ("import: version 0", InvalidInputError, "version", lambda c, i, t: c.import_jsonl(_import_row(t, version=0))),
    ("import: no created_at", InvalidInputError, "created_at", lambda c, i, t: c.import_jsonl(_import_row(t, created_at=None))),
    ("import: item not an object", InvalidInputError, "object", lambda c, i, t: (t / "list.jsonl").write_text(
        '{"type": "item", "item": [1, 2]}\n') and c.import_jsonl(t / "list.jsonl")),
    ("import: NaN edge weight", InvalidInputError, "finite", lambda c, i, t: (t / "edge.jsonl").write_text(
        '{"type": "edge", "edge": {"src": "a", "dst": "b", "type": "k", "weight": NaN}}\n') and c.import_jsonl(t / "edge.jsonl")),
    ("import: a line nested 100,000 deep", InvalidInputError, "JSON line",
     lambda c, i, t: (t / "deep.jsonl").write_text("[" * 100_000 + "\n") and c.import_jsonl(t / "deep.jsonl")),
]


@pytest.mark.parametrize("name, error, message, call", CASES, ids=[c[0] for c in CASES])
def test_refused_with_a_clear_error_and_the_cube_unchanged(
        seeded: Any, tmp_path: Path, name: str, error: type[MemosError], message: str, call: Callable[..., Any]) -> None:
    cube, first = seeded
    before = snapshot(cube)
    with pytest.raises(error, match=message):
        call(cube, first.id, tmp_path)
    assert snapshot(cube) == before, f"{name}: the cube changed"


def test_times_at_the_edges_of_the_range_round_trip(cube: MemCube, tmp_path: Path) -> None:
    low, high = cube.add(memory=["the earliest", "the latest"], timestamp=None)
    cube.update(low.id, event_time=MIN_TIME)
    cube.update(high.id, event_time=MAX_TIME, valid_to=MAX_TIME)
    assert cube.get(high.id).event_time == MAX_TIME and cube.get(low.id).event_time == MIN_TIME
    assert [h.item.id for h in cube.search("the latest", time_to="9999-12-29", top_k=2)] != []
    assert cube.export_jsonl(tmp_path / "out.jsonl") == 4  # two items, two versions each
    cube.close()
    with MemCube.open(cube.path, embedder=cube.embedder) as again:
        assert again.get(high.id).valid_to == MAX_TIME


def test_parse_timestamp_range_and_relative_expressions_beyond_the_calendar() -> None:
    assert parse_timestamp(MAX_TIME.isoformat()) == MAX_TIME
    for bad in (LATE, EARLY, "10000-01-01", 1e17, datetime.max, datetime.min):
        with pytest.raises(InvalidInputError, match="outside the times|epoch"):
            parse_timestamp(bad)
    at = datetime(2023, 5, 8, tzinfo=timezone.utc)
    assert resolve_relative("The pyramids were built 4500 years ago.", at) == []
    assert resolve_relative("66000000 years ago, and yesterday", at)[0][0] == "yesterday"
    assert resolve_relative("tomorrow", datetime(9999, 12, 31)) == []
    assert resolve_relative("next year", datetime(9999, 6, 1)) == []
    assert resolve_relative("last month", datetime(1, 1, 5)) == []


def test_relative_expressions_too_far_back_are_stored_without_a_resolved_time(cube: MemCube) -> None:
    added = cube.add(messages=[
        {"role": "user", "content": "The pyramids were built 4500 years ago."},
        {"role": "user", "content": "The dinosaurs died out 66000000 years ago."},
        {"role": "user", "content": "I visited them yesterday."},
    ], timestamp="8 May 2023", session_id="s")
    assert len(added) == 3  # the whole batch is kept
    assert "refers_to" not in added[0].metadata and "refers_to" not in added[1].metadata
    assert added[2].metadata["refers_to"][0]["from"] == "2023-05-07"
    assert cube.search("When were the pyramids built 4500 years ago?", top_k=1)  # the query side too


class _PoisonedEmbedder:
    """The real MiniLM embedder, except that texts containing 'poison' come back as NaN: a stand-in
    for a model whose half-precision weights overflow (a mock of a fault, not of the model)."""

    def __init__(self, real: Any) -> None:
        self.real, self.name, self.dimension = real, "poisoned-minilm", real.dimension

    @property
    def fingerprint(self) -> str:
        return self.real.fingerprint  # type: ignore[no-any-return]

    def embed_documents(self, texts: Any) -> np.ndarray:
        out = np.array(self.real.embed_documents(texts), dtype=np.float32)
        for n, text in enumerate(texts):
            if "poison" in text:
                out[n] = np.nan
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def test_nan_vectors_from_an_embedder_are_refused_and_the_cube_keeps_working(
        tmp_path: Path, embedder: Any) -> None:
    poisoned = _PoisonedEmbedder(embedder)
    with MemCube.init_from_dir(tmp_path / "cube", embedder=poisoned) as cube:
        cube.add(memory="Alice likes genmaicha tea.")
        before = snapshot(cube)
        with pytest.raises(InvalidInputError, match="poisoned-minilm"):
            cube.add(memory=["fine", "a poison pill"])
        assert snapshot(cube) == before
        path = tmp_path / "poison.jsonl"
        path.write_text(json.dumps({"type": "item", "item": MemoryItem(text="poison", id="p").to_dict()}) + "\n")
        with pytest.raises(InvalidInputError, match="NaN"):
            cube.import_jsonl(path)
        assert snapshot(cube) == before
        cube.add(memory="Bob drinks coffee.")  # later adds work (on main Chroma failed from here on)
    with MemCube.open(tmp_path / "cube", embedder=embedder) as cube:
        assert cube.stats()["items"] == 2 and cube.index.count() == 2


def test_export_of_a_stored_lone_surrogate_completes_and_import_refuses_it(
        cube: MemCube, make_cube: Any, tmp_path: Path) -> None:
    cube.add(memory="fine")
    # a row written before validation existed (straight to the store, as an older version could)
    old = MemoryItem(text="legacy", metadata={"note": "bad \udc80 byte"}, cube_id=cube.cube_id)
    cube.store.write_items([old], cube.embedder.embed_documents(["legacy"]))
    out = tmp_path / "out.jsonl"
    assert cube.export_jsonl(out) == 2  # on main: UnicodeEncodeError half-way, a partial file left
    lines = out.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[1])["item"]["metadata"] == {"note": "bad \udc80 byte"}  # escaped, not lost
    target = make_cube("target")
    with pytest.raises(InvalidInputError, match=r"out.jsonl:2: .*UTF-8"):
        target.import_jsonl(out)
    assert target.stats()["items"] == 0


def test_filters_at_their_limits_still_run(seeded: Any) -> None:
    cube, _ = seeded
    deep = nested(MAX_FILTER_DEPTH, {"a": 1}, "$not")
    wide = {"$or": [{"a": n} for n in range(MAX_FILTER_CONDITIONS)]}
    inner = nested(MAX_FILTER_DEPTH - 1, {"a": 1}, "$not")
    worst = {"$or": [inner, *({"a": {"$any": [n]}} for n in range(MAX_FILTER_CONDITIONS - 2))],
             "b": {"$in": list(range(4000))}}
    for metadata in (deep, wide, worst):
        assert cube.search("tea", metadata=metadata) is not None
        assert cube.store.count(MemoryFilter(metadata=metadata)) >= 0
    assert cube.search("tea", top_k=1_000_000)
    assert cube.get_all(limit=2**63 - 1, offset=0)


def test_limits_are_the_documented_ones() -> None:
    from memos_integrations import items

    assert (items.MAX_TOP_K, items.MAX_TAGS, items.MAX_METADATA_DEPTH, items.MAX_SQL_INT) == (
        1_000_000, 1_000, 32, 2**63 - 1)
    assert MIN_TIME < utcnow() < MAX_TIME


def test_a_failed_export_leaves_no_partial_file(cube: MemCube, tmp_path: Path) -> None:
    from memos_integrations.errors import CubeCorruptedError

    first, second = cube.add(memory=["first", "second"])
    with cube.store.transaction() as c:  # a damaged version row: the export fails half-way through
        c.execute("UPDATE versions SET data='{' WHERE item_id=?", (second.id,))
    out = tmp_path / "out.jsonl"
    with pytest.raises(CubeCorruptedError, match="wrote nothing"):
        cube.export_jsonl(out)
    assert [p.name for p in tmp_path.iterdir()] == ["cube"]  # no out.jsonl, no temporary file
