"""Chat-sized input never breaks a run (issue 9, items 12 and 13).

A whitespace query finds nothing instead of raising; a pasted 36k or 200k-character query is reduced
and still finds the memory it is about; a 40k-character message is stored whole and indexed by parts
that lead back to it and go when it goes; what stays limited fails with a clear MemosError.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig
from memos_integrations.errors import InvalidTypeError, MemosError, OversizedInputError
from memos_integrations.items import Kind, MemoryItem
from memos_integrations.textual import limits as L
from memos_integrations.textual.filters import MemoryFilter
from tests.unit.conftest import snapshot

FACTS = [
    "My brother Tiago lives in Porto and restores old trams for the city museum.",
    "Alice prefers genmaicha tea in the afternoon.",
    "The quarterly budget review moved to Thursday.",
    "Our cat Miso hates the vacuum cleaner.",
]


def log_noise(chars: int, seed: int = 7) -> str:
    """A pasted service log: repetitive lines with ids and numbers, none of the facts' words."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < chars:
        line = (f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:07Z "
                f"{rng.choice(['INFO', 'WARN', 'DEBUG'])} worker-{rng.randint(1, 9)} "
                f"{rng.choice(['heartbeat ok', 'flushed batch', 'retrying request', 'gc pause'])} "
                f"seq={rng.randint(1000, 99999)} latency_ms={rng.randint(1, 900)}")
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:chars]


@pytest.fixture(scope="module")
def facts_cube(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    cube = MemCube.init_from_dir(tmp_path_factory.mktemp("chat") / "cube", embedder=embedder)
    cube.add(memory=FACTS, user_id="u")
    yield cube
    cube.close()


# -- item 12: an empty query asks for nothing ---------------------------------------------------
@pytest.mark.parametrize("query", ["", " ", "\n\t  "])
def test_an_empty_or_whitespace_query_finds_nothing(facts_cube: Any, query: str) -> None:
    for plan in ("fast", "balanced", "deep"):
        assert facts_cube.search(query, user_id="u", plan=plan) == []


def test_bad_query_arguments_still_raise(facts_cube: Any) -> None:
    with pytest.raises(InvalidTypeError, match="query must be a string"):
        facts_cube.search(None)
    with pytest.raises(MemosError, match="top_k"):
        facts_cube.search("  ", top_k=0)


def test_a_whitespace_query_with_a_vector_searches_by_the_vector(facts_cube: Any, embedder: Any) -> None:
    vec = embedder.embed_query("what tea does Alice like?")
    assert "genmaicha" in facts_cube.search("  ", query_vector=vec, user_id="u", top_k=1)[0].item.text


# -- item 13: long queries are reduced, never refused ------------------------------------------
@pytest.mark.parametrize("chars", [36_000, 200_000])
@pytest.mark.parametrize("where", ["end", "middle"])
def test_a_pasted_long_query_is_searched_and_finds_the_memory(facts_cube: Any, chars: int, where: str) -> None:
    question = "Also, what does my brother Tiago restore in Porto?"
    noise = log_noise(chars)
    query = noise + "\n" + question if where == "end" else noise[: chars // 2] + "\n" + question + "\n" + noise[chars // 2 :]
    assert len(query) > chars
    for plan in ("balanced", "deep"):
        hits = facts_cube.search(query, user_id="u", top_k=3, plan=plan)
        assert hits and "Tiago" in hits[0].item.text, (plan, [h.item.text for h in hits])
    if where == "end":  # dense only: the reduced text keeps the query's last part
        hits = facts_cube.search(query, user_id="u", top_k=1, plan="fast")
        assert "Tiago" in hits[0].item.text


def test_a_short_query_is_searched_as_before(facts_cube: Any) -> None:
    """Below query_chars nothing is reduced: the same hits as the plain keyword terms give."""
    query = "which museum trams does Tiago restore?"
    assert len(query) < facts_cube.config.query_chars
    assert "Tiago" in facts_cube.search(query, user_id="u", top_k=1)[0].item.text


def test_reduce_query_keeps_the_tail_and_the_rarest_known_terms() -> None:
    query = "flux capacitor overheated\n" + log_noise(50_000) + "\nwhat broke in the lab?"
    counts = {t: (1 if t in {"flux", "capacitor"} else 0 if any(c.isdigit() for c in t) else 500) for t in L.candidate_terms(query, 800)}
    reduced = L.reduce_query(query, counts, 800)
    assert len(reduced.text) <= 800 and "what broke in the lab?\n" in reduced.text
    assert set(reduced.terms[:2]) == {"flux", "capacitor"} and len(reduced.terms) <= 32
    assert {"broke", "lab"} <= set(reduced.terms)  # the question's words are kept
    assert {"flux", "capacitor"} <= set(reduced.text.rsplit("\n", 1)[1].split())  # after the question
    assert len(L.candidate_terms(query, 800)) <= L.MAX_CANDIDATE_TERMS


# -- item 13: long messages are kept whole and indexed by parts --------------------------------
SECRET = "The vault combination for the Lisbon office is amber falcon forty two."


@pytest.fixture(scope="module")
def long_message(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    cube = MemCube.init_from_dir(tmp_path_factory.mktemp("long") / "cube", embedder=embedder)
    cube.add(memory=FACTS, user_id="u")
    noise = log_noise(40_000, seed=3)
    text = noise[:20_000] + "\n" + SECRET + "\n" + noise[20_000:]
    cube.add(messages=[{"role": "user", "content": "I will paste the log now."}], user_id="u", session_id="s")
    stored = cube.add(messages=[{"role": "user", "content": text, "id": "turn-2"}], user_id="u", session_id="s")
    yield cube, stored, text
    cube.close()


def test_a_40k_message_is_stored_whole(long_message: Any) -> None:
    cube, stored, text = long_message
    assert len(text) > 40_000 and len(stored) == 1  # one item per message, parts not returned
    message = cube.get(stored[0].id)
    assert message.text == text and message.kind == Kind.MESSAGE and message.sources == ["turn-2"]


def test_its_parts_cover_it_and_point_at_it(long_message: Any) -> None:
    cube, stored, text = long_message
    parts = cube.text_mem.list_items(MemoryFilter(parent_id=stored[0].id, kinds=[Kind.CHUNK]))
    assert len(parts) > 30
    assert all(len(p.text) <= cube.config.part_chars for p in parts)
    assert all(p.sources == [stored[0].id] and p.metadata["part_of"] == stored[0].id for p in parts)
    assert all(p.session_id == "s" and p.user_id == "u" for p in parts)  # same scope: filters find them
    parts.sort(key=lambda p: p.metadata["part"])
    assert parts[0].metadata["start"] == 0 and parts[-1].metadata["end"] == len(text)
    for a, b in zip(parts, parts[1:]):  # contiguous or overlapping: nothing of the text is unindexed
        assert b.metadata["start"] <= a.metadata["end"]
    assert all(text[p.metadata["start"] : p.metadata["end"]] == p.text for p in parts)


def test_a_part_is_found_and_leads_back_to_the_whole_message(long_message: Any) -> None:
    cube, stored, text = long_message
    for plan in ("fast", "balanced", "deep"):
        hits = cube.search("what is the vault combination for the Lisbon office?", user_id="u", top_k=5, plan=plan)
        top = hits[0].item
        assert "amber falcon" in top.text, plan
        assert L.root_of(top) == stored[0].id
        assert cube.get(top.metadata["part_of"]).text == text
        roots = [L.root_of(h.item) for h in hits]
        assert len(roots) == len(set(roots)), f"{plan}: one message came back as several hits"
        assert len(hits) == 5, f"{plan}: the parts of one message crowded out other memories"


def test_a_long_memory_text_is_kept_whole_too(cube: Any) -> None:
    text = log_noise(35_000) + "\nThe backup server is called hornbeam."
    item = cube.add(memory=text, user_id="u", kind="document")[0]
    assert cube.get(item.id).text == text
    hit = cube.search("what is the backup server called?", user_id="u", top_k=1)[0]
    assert "hornbeam" in hit.item.text and hit.item.metadata["part_of"] == item.id


def test_deleting_the_message_deletes_its_parts(cube: Any) -> None:
    cube.add(memory=FACTS, user_id="u")
    text = log_noise(40_000) + "\n" + SECRET
    msg = cube.add(messages=[{"role": "user", "content": text}], user_id="u", session_id="s")[0]
    parts = cube.text_mem._parts_of([msg.id])
    assert parts
    assert cube.delete(msg.id) == 1  # the count is of the memories asked for
    assert cube.text_mem._parts_of([msg.id]) == []
    assert all(cube.history(p)[-1].state == "deleted" for p in parts)
    hits = cube.search("vault combination amber falcon", user_id="u", top_k=10)
    assert all(L.root_of(h.item) != msg.id for h in hits)
    assert cube.stats()["vectors_indexed"] == len(FACTS)


def test_a_long_message_keeps_its_updates_and_survives_the_scheduler_path(cube: Any) -> None:
    text = log_noise(33_000)
    msg = cube.add(messages=[{"role": "user", "content": text}], user_id="u")[0]
    assert cube.update(msg.id, state="activated", tags=["log"]).text == text  # no text change: no length check
    with pytest.raises(OversizedInputError, match="max_text_chars"):
        cube.update(msg.id, text=text + " more")  # a new long text would leave its parts stale


# -- what stays limited fails clearly -----------------------------------------------------------
@pytest.fixture
def small_cube(tmp_path: Path, embedder: Any) -> Any:
    config = CubeConfig(max_text_chars=200, max_message_chars=2_000, part_chars=100, query_chars=100)
    cube = MemCube.init_from_dir(tmp_path / "small", config, embedder=embedder)
    cube.add(memory="Alice prefers genmaicha tea.", user_id="u")
    yield cube
    cube.close()


def test_limits_come_from_the_config(small_cube: Any) -> None:
    text = "word " * 300  # 1,500 chars: over max_text_chars, under max_message_chars
    msg = small_cube.add(messages=[{"role": "user", "content": text}], user_id="u")[0]
    assert small_cube.get(msg.id).text == text
    assert len(small_cube.text_mem._parts_of([msg.id])) >= 15
    assert small_cube.search("genmaicha " + "x" * 5_000 + " tea?", user_id="u")  # reduced at 100 chars


@pytest.mark.parametrize("call, message", [
    (lambda c: c.add(messages=[{"role": "user", "content": "ok"}, {"role": "user", "content": "y" * 2_001}]),
     "message 1 has 2001 characters.*max_message_chars"),
    (lambda c: c.add(memory=["fine", "y" * 2_001]), "text 1 has 2001 characters.*max_message_chars"),
    (lambda c: c.add_items([MemoryItem(text="y" * 201)]), "limit of 200"),
])
def test_past_the_hard_limits_a_clear_error_and_no_change(small_cube: Any, call: Any, message: str) -> None:
    before = snapshot(small_cube)
    with pytest.raises(OversizedInputError, match=message) as err:
        call(small_cube)
    assert isinstance(err.value, MemosError) and isinstance(err.value, ValueError)
    assert snapshot(small_cube) == before


# -- the faces that call the engine -------------------------------------------------------------
def test_chat_history_with_remember_keeps_a_pasted_log_turn(cube: Any) -> None:
    messages = pytest.importorskip("langchain_core.messages")
    from memos_integrations.langchain.chat_history import MemOSChatMessageHistory

    history = MemOSChatMessageHistory(cube, "s1", user_id="u", remember=True)
    log = log_noise(36_000) + "\n" + SECRET
    history.add_messages([messages.HumanMessage(log), messages.AIMessage("Noted.")])
    assert [m.content for m in history.messages] == [log, "Noted."]
    hit = cube.search("vault combination of the Lisbon office", user_id="u", top_k=1)[0]
    assert "amber falcon" in hit.item.text and cube.get(hit.item.metadata["part_of"]).text == log


def test_langgraph_store_search_takes_a_blank_or_pasted_query(cube: Any) -> None:
    """What a LangMem search tool sends: " " (results, like InMemoryStore) and a whole pasted log."""
    pytest.importorskip("langgraph.store.base")
    from memos_integrations.langgraph import MemOSStore

    store = MemOSStore(cube, index={"fields": ["text"]})
    store.put(("users", "u"), "m1", {"text": "My brother Tiago restores old trams in Porto."})
    store.put(("users", "u"), "m2", {"text": "Alice prefers genmaicha tea."})
    assert len(store.search(("users", "u"), query=" ", limit=5)) == 2
    pasted = log_noise(36_000) + "\nWhat does my brother Tiago restore in Porto?"
    assert [h.key for h in store.search(("users", "u"), query=pasted, limit=1)] == ["m1"]


def test_a_cube_with_a_long_message_merges_into_another(cube: Any, tmp_path: Path, embedder: Any) -> None:
    text = log_noise(33_000) + "\n" + SECRET
    msg = cube.add(messages=[{"role": "user", "content": text}], user_id="u")[0]
    with MemCube.init_from_dir(tmp_path / "other", embedder=embedder) as other:
        assert other.merge(cube) == 1 + len(cube.text_mem._parts_of([msg.id]))
        assert other.get(msg.id).text == text
        hit = other.search("vault combination of the Lisbon office", user_id="u", top_k=1)[0]
        assert hit.item.metadata["part_of"] == msg.id


def test_a_new_shorter_version_drops_the_parts_it_no_longer_has(small_cube: Any) -> None:
    mem = small_cube.text_mem
    long_item = MemoryItem(text="word " * 300, id="doc-1", user_id="u")
    mem.add_whole([long_item])
    assert len(mem._parts_of(["doc-1"])) >= 15
    mem.add_whole([MemoryItem(text="now a short text", id="doc-1", user_id="u")])
    assert mem._parts_of(["doc-1"]) == [] and small_cube.get("doc-1").version == 2
