"""Issue 14, links (seventh session): first-person conflicts are links, and a flagged conflict reaches the model.

- "I live in Lisbon" / "I live in Porto" from one user is a conflict: flagged without an LLM, superseded
  through the reader (the stand-in server) when one is configured.
- What the LangChain faces hand the model (the middleware's system prompt, the retriever's documents,
  the search tool's lines) says that a memory is contradicted, read in one batch, and never quotes
  another user's memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from memos_integrations import MemCube
from memos_integrations.items import Edge, MemoryItem
from memos_integrations.langchain import MemOSRetriever
from memos_integrations.langchain.middleware import MemOSMemoryMiddleware
from memos_integrations.organize import organize
from memos_integrations.organize.links import conflict_notes, flagged_conflicts, wanted_links
from memos_integrations.readers import LLMReader
from memos_integrations.storage.graph import CONFLICT, SUPERSEDED_BY
from tests.openai_standin import StandinServer, rule_responder


def conflicts(cube: MemCube, ids: list[str]) -> list[Edge]:
    return cube.graph.edges(ids, "both", [CONFLICT])


def test_first_person_statements_of_one_user_conflict_without_an_llm(cube: MemCube) -> None:
    old = cube.add(memory="I live in Lisbon.", user_id="ana", session_id="s1")[0]
    new = cube.add(memory="I live in Porto now.", user_id="ana", session_id="s2")[0]
    report = organize(cube, reader=None)
    edges = conflicts(cube, [old.id, new.id])
    assert [(e.src, e.dst, e.metadata["status"], e.metadata["attribute"]) for e in edges] == [
        (new.id, old.id, "flagged", "lives in")]
    assert report.conflicts == 1 and report.superseded == 0
    assert cube.get(old.id).valid_to is None  # flagged, not resolved: both stay


def test_agreeing_or_other_speakers_statements_are_no_conflict() -> None:
    def item(text: str, i: str, speaker: str | None = None) -> MemoryItem:
        return MemoryItem(text=text, id=i, user_id="u", metadata={"speaker": speaker} if speaker else {})

    same = [item("I live in Lisbon.", "a"), item("I live in Lisbon with my wife, near the river.", "b")]
    assert not [k for k in wanted_links(same) if k[1] == CONFLICT]
    two_people = [item("I live in Lisbon.", "a", "Maya"), item("I live in Porto.", "b", "Tom")]
    assert not [k for k in wanted_links(two_people) if k[1] == CONFLICT]
    moments = [item("My favourite part was the hike.", "a"), item("My favourite part was the music.", "b"),
               item("My art is about expressing my experience.", "c"), item("My art is important to me.", "d")]
    assert not [k for k in wanted_links(moments) if k[1] == CONFLICT]  # a past moment, opinions: no facts
    # a speaker's own words contradict what is said about them in the third person, and colours conflict
    mixed = [item("Maya lives in Lisbon.", "a"), item("I live in Porto.", "b", "Maya"),
             item("My favourite colour is blue.", "c"), item("My favorite colour is green.", "d")]
    found = sorted((k[0], k[2]) for k in wanted_links(mixed) if k[1] == CONFLICT)
    assert found == [("b", "a"), ("d", "c")]  # "favorite" and "favourite": one attribute


def test_the_stand_in_llm_reader_supersedes_a_first_person_conflict(tmp_path: Path, embedder: Any) -> None:
    with StandinServer(rule_responder) as srv:
        reader = LLMReader.from_openai(model="standin", base_url=srv.url, api_key="test-key", backoff_s=0.01)
        with MemCube.init_from_dir(tmp_path / "c", embedder=embedder, reader=reader) as cube:
            old = cube.add(memory="I live in Lisbon.", user_id="ana", session_id="s1")[0]
            new = cube.add(memory="I live in Porto.", user_id="ana", session_id="s2")[0]
            report = cube.organize()
            assert report.reader_errors == 0 and report.superseded == 1
            closed = cube.history(old.id)[-1]
            assert closed.valid_to is not None and closed.metadata["superseded_by"] == new.id
            assert [e.dst for e in cube.graph.edges([old.id], "out", [SUPERSEDED_BY])] == [new.id]
            assert [e.metadata["status"] for e in conflicts(cube, [new.id])] == ["resolved"]
            assert flagged_conflicts(cube, [cube.get(new.id)]) == {}  # resolved: nothing to tell the model


@pytest.fixture
def disputed(cube: MemCube) -> tuple[MemCube, MemoryItem, MemoryItem]:
    old = cube.add(memory="I live in Lisbon.", user_id="ana", session_id="s1")[0]
    new = cube.add(memory="I live in Porto now.", user_id="ana", session_id="s2")[0]
    cube.add(memory="I live in Madrid.", user_id="bob", session_id="s1")
    organize(cube, reader=None)
    return cube, old, new


def test_the_middleware_tells_the_model_that_two_memories_disagree(disputed: Any) -> None:
    cube, old, new = disputed
    mw = MemOSMemoryMiddleware(cube, user_id="ana", k=5)
    text = mw.recall("ana", HumanMessage("Where do I live?", id="m1"))["text"]
    lines = {line for line in text.splitlines() if line.startswith("- ")}
    assert '- I live in Porto now. (conflicts with: "I live in Lisbon.")' in lines
    assert '- I live in Lisbon. (conflicts with: "I live in Porto now.")' in lines
    assert "Madrid" not in text


def test_the_retriever_marks_conflicts_in_one_batch_and_never_another_users(disputed: Any, monkeypatch: Any) -> None:
    cube, old, new = disputed
    calls: list[int] = []
    edges = cube.graph.edges

    def counted(ids: Any, *a: Any, **kw: Any) -> Any:
        calls.append(len(ids))
        return edges(ids, *a, **kw)

    monkeypatch.setattr(cube.graph, "edges", counted)
    docs = MemOSRetriever(cube=cube, user_id="ana", k=5).invoke("Where do I live?")
    marked = {d.page_content: d.metadata.get("conflicts") for d in docs}
    assert marked["I live in Porto now."] == ["I live in Lisbon."] and marked["I live in Lisbon."] == ["I live in Porto now."]
    assert calls[-1] == len(docs) and len([c for c in calls if c == len(docs)]) == 1  # one batch for the page
    # a conflict link to another user's memory (written by hand, or by a bug) is never shown
    bob = cube.get_all(user_id="bob")[0]
    cube.graph.add_edges([Edge(new.id, bob.id, CONFLICT, 1.0, {"status": "flagged"})])
    theirs = cube.add(memory="I live in Faro.", user_id="ana", agent_id="travel-bot")[0]  # another agent's own
    cube.graph.add_edges([Edge(new.id, theirs.id, CONFLICT, 1.0, {"status": "flagged"})])
    notes = conflict_notes(cube, [cube.get(new.id)])
    assert notes == {new.id: ["I live in Lisbon."]}
    monkeypatch.undo()
    for doc in MemOSRetriever(cube=cube, user_id="ana", k=5).invoke("Where do I live?"):
        assert "Madrid" not in str(doc.metadata.get("conflicts"))


def test_the_search_tool_lines_mark_conflicts(disputed: Any) -> None:
    from memos_integrations.langchain.tools import SearchMemoryTool

    cube, old, new = disputed
    tool = SearchMemoryTool(cube=cube, user_id="ana")
    out = tool.invoke({"query": "Where do I live?", "k": 5})
    assert f'[{new.id}] (fact) I live in Porto now. (conflicts with: "I live in Lisbon.")' in out
    assert "Madrid" not in out


def test_the_llama_index_memory_block_marks_conflicts(disputed: Any) -> None:
    from memos_integrations.llama_index.memory_block import MemOSMemoryBlock

    cube, old, new = disputed
    block = MemOSMemoryBlock(cube, user_id="ana", top_k=5)
    text = block._search("Where do I live?", None)
    assert '- I live in Porto now. (conflicts with: "I live in Lisbon.")' in text.splitlines() or \
        any(line.startswith("- I live in Porto now.") and line.endswith('(conflicts with: "I live in Lisbon.")')
            for line in text.splitlines())
    assert "Madrid" not in text


def test_one_statement_said_many_times_is_linear() -> None:
    import time

    items = [MemoryItem(text=f"I live in Lisbon. Note {n}.", id=f"m{n}", user_id="u") for n in range(20_000)]
    items.append(MemoryItem(text="I live in Porto.", id="last", user_id="u"))
    started = time.perf_counter()
    found = [k for k in wanted_links(items) if k[1] == CONFLICT]
    assert found == [("last", CONFLICT, "m19999")]
    assert time.perf_counter() - started < 5.0  # walking every earlier statement: 2e8 comparisons, minutes
    third = [MemoryItem(text=f"Maya lives in Lisbon. Note {n}.", id=f"t{n}", user_id="u") for n in range(20_000)]
    started = time.perf_counter()
    assert not [k for k in wanted_links(third) if k[1] == CONFLICT]
    assert time.perf_counter() - started < 5.0
