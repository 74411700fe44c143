"""Fuzz the public API with hostile values: every call either succeeds and leaves a cube that still
reads (get, search, export, a reopen), or raises a MemosError and leaves the cube exactly as it was.

Values are drawn to hit the edges issue 15 found: times beyond year 9999 or before year 1 once a
timezone applies, epochs of any size, NaN and infinities, integers beyond 64 bits, lone surrogates,
deep nesting, long tag lists, huge ``top_k``, hostile filters and export rows. Derandomised, so a
run is reproducible; about 20-30 s on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from memos_integrations import MemCube
from memos_integrations.errors import MemosError
from memos_integrations.items import MemoryItem, SearchHit, new_id
from memos_integrations.textual.filters import OPERATORS
from tests.unit.conftest import snapshot

# -- values ------------------------------------------------------------------------------------------
CHARS = st.characters(blacklist_categories=())  # surrogates included
SPECIAL_TEXT = st.sampled_from([
    "", "   ", "The pyramids were built 4500 years ago.", "It happened 66000000 years ago.", "tomorrow",
    "next year, last month", "lone \udc80 surrogate", "\x00nul", "when did it happen in May 0001?",
    "what did we plan last week?", "x" * 33_000,
])
TEXT = st.one_of(st.text(CHARS, max_size=40), SPECIAL_TEXT)
BIG_INT = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**30, 10**400]))
FLOAT = st.floats(allow_nan=True, allow_infinity=True)
SCALAR = st.one_of(st.none(), st.booleans(), BIG_INT, FLOAT, st.text(CHARS, max_size=8))


def deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


JSON = st.one_of(
    st.recursive(SCALAR, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(CHARS, max_size=6), inner, max_size=3)), max_leaves=8),
    st.sampled_from([40, 5000]).map(deep),
)
METADATA = st.one_of(st.dictionaries(st.text(CHARS, max_size=6), JSON, max_size=4), JSON)
ZONES: Any = st.sampled_from([None, timezone.utc, timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))])
TIME = st.one_of(
    st.none(),
    st.datetimes(timezones=ZONES),
    st.sampled_from(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "8 May 2023", "1:56 pm on 8 May, 2023",
                     "0001-01-01", "9999-12-31", "10000-01-01", "soonish", "2023-05-08T13:56Z", datetime.max, datetime.min]),
    BIG_INT, FLOAT, st.text(CHARS, max_size=12),
)
TAGS = st.one_of(st.lists(st.text(CHARS, max_size=6), max_size=4), st.just([f"t{n}" for n in range(1_500)]),
                 st.lists(BIG_INT, max_size=2))
CONFIDENCE = st.one_of(st.none(), FLOAT, BIG_INT, st.just("high"))


# values every call should accept: each operation draws at most one field from the hostile strategies
# above and the rest from these, so successes (and the read-back check after them) are common too
PLAIN = st.characters()  # the default leaves out surrogates
TEXT_OK = st.one_of(st.text(PLAIN, min_size=1, max_size=40).filter(str.strip), st.sampled_from([
    "The pyramids were built 4500 years ago.", "It happened 66000000 years ago.", "tomorrow", "\x00nul",
    "what did we plan last week?", "Alice likes genmaicha tea."]))
SCALAR_OK = st.one_of(st.none(), st.booleans(), st.integers(-(2**63) + 1, 2**63 - 1),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(PLAIN, max_size=8))
METADATA_OK = st.dictionaries(st.text(PLAIN, max_size=6), st.recursive(SCALAR_OK, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(PLAIN, max_size=6), inner, max_size=3)), max_leaves=6),
    max_size=3)
TIME_OK = st.one_of(st.none(), st.datetimes(datetime(1, 1, 3), datetime(9999, 12, 28), timezones=ZONES),
                    st.sampled_from(["8 May 2023", "1:56 pm on 8 May, 2023", "2023-05-08T13:56Z"]))
TAGS_OK = st.lists(st.text(PLAIN, max_size=6), max_size=4)
CONFIDENCE_OK = st.one_of(st.none(), st.floats(0, 1))
WEIGHT_OK = st.floats(-1e6, 1e6)
TOP_K_OK = st.integers(1, 50)


def pick(d: st.DataObject, hostile: str | None, name: str, good: Any, bad: Any) -> Any:
    return d.draw(bad if hostile == name else good, name)


def _condition(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    ops = st.sampled_from(list(OPERATORS))
    return st.one_of(value, st.dictionaries(ops, st.one_of(value, st.lists(value, max_size=3)), min_size=1, max_size=2))


LEAF = st.dictionaries(st.sampled_from(["n", "speaker", "a.b", "bad key!", "$bogus"]), _condition(SCALAR),
                       min_size=1, max_size=2)
FILTER = st.one_of(
    st.none(),
    st.recursive(LEAF, lambda inner: st.one_of(
        st.builds(lambda subs: {"$or": subs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda subs: {"$and": subs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda sub: {"$not": sub}, inner)), max_leaves=6),
    st.sampled_from([
        {"$or": [{"n": i} for i in range(20_000)]}, {"n": {"$in": list(range(40_000))}},
        {"n": {"$gt": math.nan}}, {"n": 10**30},
    ]),
    st.just(None).map(lambda _: _nested_not(30)),
)


def _nested_not(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"n": 1}
    for _ in range(depth):
        value = {"$not": value}
    return value


# -- operations --------------------------------------------------------------------------------------
def hostile_field(d: st.DataObject, *names: str) -> str | None:
    return d.draw(st.sampled_from([None, *names]), "hostile")


def op_add(d: st.DataObject) -> tuple[str, dict[str, Any]]:
    h = hostile_field(d, "text", "timestamp", "metadata", "tags", "name", "id")
    if d.draw(st.booleans(), "messages"):
        msg = {"role": "user", "content": pick(d, h, "text", TEXT_OK, TEXT),
               "name": pick(d, h, "name", st.text(PLAIN, min_size=1, max_size=6), st.one_of(BIG_INT, TEXT)),
               "metadata": pick(d, h, "metadata", METADATA_OK, METADATA),
               "id": pick(d, h, "id", st.text(PLAIN, min_size=1, max_size=6), st.one_of(BIG_INT, TEXT))}
        return "add", {"messages": [msg, {"role": "assistant", "content": "noted"}], "session_id": "s",
                       "timestamp": pick(d, h, "timestamp", TIME_OK, TIME), "tags": pick(d, h, "tags", TAGS_OK, TAGS)}
    return "add", {"memory": pick(d, h, "text", st.one_of(TEXT_OK, st.lists(TEXT_OK, min_size=1, max_size=3)),
                                  st.one_of(TEXT, st.lists(TEXT, min_size=1, max_size=3))),
                   "timestamp": pick(d, h, "timestamp", TIME_OK, TIME),
                   "metadata": pick(d, h, "metadata", METADATA_OK, METADATA), "tags": pick(d, h, "tags", TAGS_OK, TAGS),
                   "user_id": pick(d, h, "id", st.one_of(st.none(), st.text(PLAIN, min_size=1, max_size=6)),
                                   st.text(CHARS, max_size=6))}


def op_add_items(d: st.DataObject) -> tuple[str, dict[str, Any]]:
    h = hostile_field(d, "text", "confidence", "metadata", "event_time", "tags", "vector")
    fields = {"text": pick(d, h, "text", TEXT_OK, TEXT),
              "confidence": pick(d, h, "confidence", CONFIDENCE_OK, CONFIDENCE),
              "metadata": pick(d, h, "metadata", METADATA_OK, METADATA),
              "event_time": pick(d, h, "event_time", st.none(), st.datetimes(timezones=ZONES)),
              "tags": pick(d, h, "tags", TAGS_OK, TAGS)}
    vector = pick(d, h, "vector", st.sampled_from([None, 0.5]), st.sampled_from([math.nan, math.inf, -math.inf]))
    return "add_items", {"item": fields, "vector": vector}


def op_search(d: st.DataObject) -> tuple[str, dict[str, Any]]:
    h = hostile_field(d, "query", "top_k", "metadata", "time", "tags")
    good_filter = st.one_of(st.none(), st.dictionaries(st.sampled_from(["n", "speaker", "a.b"]), SCALAR_OK, max_size=2))
    return "search", {"query": pick(d, h, "query", TEXT_OK, TEXT),
                      "top_k": pick(d, h, "top_k", TOP_K_OK, st.one_of(st.integers(-3, 0), BIG_INT)),
                      "metadata": pick(d, h, "metadata", good_filter, FILTER),
                      "time_from": pick(d, h, "time", st.none(), TIME),
                      "time_to": pick(d, h, "time", st.none(), TIME),
                      "tags": pick(d, h, "tags", st.none(), TAGS),
                      "plan": d.draw(st.sampled_from(["fast", "balanced", "deep"]))}


def op_update(d: st.DataObject) -> tuple[str, dict[str, Any]]:
    key = d.draw(st.sampled_from(["text", "tags", "metadata", "event_time", "valid_to", "confidence", "state"]))
    good = {"text": TEXT_OK, "tags": TAGS_OK, "metadata": METADATA_OK, "event_time": TIME_OK, "valid_to": TIME_OK,
            "confidence": CONFIDENCE_OK, "state": st.sampled_from(["activated", "generated"])}[key]
    bad = {"text": TEXT, "tags": TAGS, "metadata": METADATA, "event_time": TIME, "valid_to": TIME,
           "confidence": CONFIDENCE, "state": st.sampled_from(["zombie", 3])}[key]
    return "update", {key: d.draw(st.one_of(good, bad))}


def op_relate(d: st.DataObject) -> tuple[str, dict[str, Any]]:
    h = hostile_field(d, "type", "weight", "metadata")
    return "relate", {"type": pick(d, h, "type", st.sampled_from(["knows", "supports"]), st.text(CHARS, max_size=6)),
                      "weight": pick(d, h, "weight", WEIGHT_OK, st.one_of(FLOAT, BIG_INT)),
                      "metadata": pick(d, h, "metadata", METADATA_OK, METADATA)}


def op_get_all(d: st.DataObject) -> tuple[str, dict[str, Any]]:
    return "get_all", {"limit": d.draw(st.one_of(st.none(), st.integers(0, 20), BIG_INT)),
                       "offset": d.draw(st.one_of(st.integers(0, 20), BIG_INT))}


def op_import(d: st.DataObject) -> tuple[str, dict[str, Any]]:
    row = MemoryItem(text="imported", id=new_id()).to_dict()
    for key in d.draw(st.lists(st.sampled_from(["text", "confidence", "metadata", "event_time", "created_at",
                                                "version", "tags", "kind"]), max_size=2, unique=True)):
        row[key] = d.draw({"text": TEXT, "confidence": CONFIDENCE, "metadata": METADATA, "tags": TAGS,
                           "event_time": st.one_of(st.none(), st.datetimes(timezones=ZONES).map(datetime.isoformat),
                                                   st.text(CHARS, max_size=10)),
                           "created_at": st.one_of(st.none(), st.datetimes(timezones=ZONES).map(datetime.isoformat)),
                           "version": st.one_of(BIG_INT, st.just("1")), "kind": st.sampled_from(["fact", "gossip"])}[key])
    edge = {"src": "a", "dst": "b", "type": "k", "weight": d.draw(st.one_of(WEIGHT_OK, FLOAT, BIG_INT))}
    return "import", {"rows": [{"type": "item", "item": row}] + ([{"type": "edge", "edge": edge}]
                                                                 if d.draw(st.booleans()) else [])}


OPS = [op_add, op_add_items, op_search, op_update, op_relate, op_get_all, op_import]


@pytest.fixture(scope="module")
def fuzz_cube(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    path = tmp_path_factory.mktemp("fuzz") / "cube"
    cube = MemCube.init_from_dir(path, embedder=embedder)
    seed = cube.add(memory="Alice likes genmaicha tea.", user_id="alice")[0]
    yield cube, seed.id, path.parent
    cube.close()


def _run(cube: MemCube, seed: str, tmp: Path, name: str, args: dict[str, Any]) -> list[Any]:
    """Run one operation; returns the items it wrote (for the read-back check)."""
    if name == "add":
        return cube.add(**args)
    if name == "add_items":
        fields = dict(args["item"])
        item = MemoryItem(**fields)
        vectors = None if args["vector"] is None else [[args["vector"]] + [0.05] * (cube.embedder.dimension - 1)]
        return cube.add_items([item], vectors=vectors)
    if name == "search":
        hits = cube.search(args.pop("query"), **args)
        assert all(isinstance(h, SearchHit) for h in hits)
        return []
    if name == "update":
        return [cube.update(seed, **args)]
    if name == "relate":
        cube.relate(seed, seed, args["type"], args["weight"], **({"m": args["metadata"]}))
        return []
    if name == "get_all":
        cube.get_all(**args)
        return []
    path = tmp / f"import-{new_id()}.jsonl"
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as fh:
        for row in args["rows"]:
            try:
                fh.write(json.dumps(row, allow_nan=True) + "\n")
            except RecursionError:  # deeper than json can write: a line just as deep, by hand
                fh.write('{"type": "item", "item": ' + '{"k": ' * 5000 + "1" + "}" * 5001 + "\n")
    cube.import_jsonl(path)
    return [cube.get(args["rows"][0]["item"]["id"])]


def _still_reads(cube: MemCube, written: list[Any]) -> None:
    for item in written:
        again = cube.get(item.id)
        assert again.text == item.text and again.metadata == item.metadata
        if again.event_time is not None:
            again.event_time.isoformat()
    assert isinstance(cube.search("tea", top_k=3), list)
    for row in cube.export_jsonl():  # type: ignore[union-attr]
        json.dumps(row, ensure_ascii=False, allow_nan=False).encode("utf-8")
    cube.get_all(limit=5)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_every_call_succeeds_readably_or_fails_cleanly(fuzz_cube: Any, data: st.DataObject) -> None:
    cube, seed, tmp = fuzz_cube
    name, args = data.draw(st.sampled_from(OPS), "op")(data)
    before = snapshot(cube)
    try:
        written = _run(cube, seed, tmp, name, args)
    except MemosError as exc:
        event(f"{name}: {type(exc).__name__}")  # --hypothesis-show-statistics lists what was hit
        assert snapshot(cube) == before, f"{name} failed but changed the cube"
        return
    event(f"{name}: ok")
    _still_reads(cube, written)


def test_the_fuzzed_cube_reopens_and_reads(fuzz_cube: Any, embedder: Any) -> None:
    cube, _, _ = fuzz_cube
    rows = list(cube.export_jsonl())
    with MemCube.open(cube.path, embedder=embedder) as again:
        assert list(again.export_jsonl()) == rows  # type: ignore[arg-type]
        assert again.index.count() == again.stats()["items"]
        _still_reads(again, again.get_all(include_archived=True))
