"""Issue 14 (ninth session): a flagged conflict reaches the model on every face, not only LangChain's.

An organised cube holds a ``conflict`` link between "I live in Lisbon." and "I live in Porto now." (one
speaker, no LLM: flagged). What each face hands a model marks it, with the shared
:func:`memos_integrations.prompting.conflict_note` wording, and never quotes another user's memory:

- the LangGraph recall node (its recalled lines) and its ``search_memory`` tool (a ``conflicts`` field);
- the LlamaIndex retriever (``node.metadata["conflicts"]``, shown to the LLM, the stored text untouched);
- the MCP server's ``search_memory`` tool (a ``conflicts`` field per memory).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MOS, MemCube
from memos_integrations.items import Edge, MemoryItem
from memos_integrations.organize import organize
from memos_integrations.storage.graph import CONFLICT

LISBON, PORTO = "I live in Lisbon.", "I live in Porto now."
NS_ANA, NS_BOB = ("users", "ana", "memories"), ("users", "bob", "memories")
ASK = "Where do I live?"


def _note(*texts: str) -> str:
    from memos_integrations.prompting import conflict_note

    return conflict_note(list(texts))


# -- LangGraph: the recall node and the memory tools -------------------------------------------------------
@pytest.fixture
def lg(cube: MemCube) -> tuple[MemCube, Any]:
    from memos_integrations.langgraph import MemOSStore

    store = MemOSStore(cube, index=True)
    store.put(NS_ANA, "home-1", {"text": LISBON})
    store.put(NS_ANA, "home-2", {"text": PORTO})
    store.put(NS_BOB, "home-1", {"text": "I live in Madrid."})
    store.put(NS_BOB, "home-2", {"text": "I live in Faro now."})
    organize(cube, reader=None)
    return cube, store


def test_the_langgraph_recall_node_marks_a_flagged_conflict(lg: Any) -> None:
    from memos_integrations.langgraph import make_recall_node

    cube, store = lg
    recall = make_recall_node(store, top_k=5)
    lines = recall({"messages": [("user", ASK)]}, {"configurable": {"user_id": "ana"}})["memories"]
    assert f"{LISBON}{_note(PORTO)}" in lines and f"{PORTO}{_note(LISBON)}" in lines
    assert not any("Madrid" in line or "Faro" in line for line in lines)
    bob = recall({"messages": [("user", ASK)]}, {"configurable": {"user_id": "bob"}})["memories"]
    assert "I live in Madrid." + _note("I live in Faro now.") in bob
    assert not any("Lisbon" in line or "Porto" in line for line in bob)


def test_the_langgraph_recall_node_never_quotes_another_users_memory(lg: Any) -> None:
    from memos_integrations.langgraph import make_recall_node

    cube, store = lg
    ana = {i.text: i for i in cube.get_all(user_id="ana")}
    bob = {i.text: i for i in cube.get_all(user_id="bob")}
    porto = next(i for t, i in ana.items() if "Porto" in t)
    madrid = next(i for t, i in bob.items() if "Madrid" in t)
    cube.graph.add_edges([Edge(porto.id, madrid.id, CONFLICT, 1.0, {"status": "flagged"})])  # by hand, or a bug
    lines = make_recall_node(store, top_k=5)({"messages": [("user", ASK)]}, {"configurable": {"user_id": "ana"}})["memories"]
    assert f"{PORTO}{_note(LISBON)}" in lines
    assert not any("Madrid" in line for line in lines)


def test_the_langgraph_notes_keep_to_the_namespaces_the_principal_may_read(cube: MemCube) -> None:
    """Values outside any user's namespace share one scope (no user), so organize can link two teams'
    values; a note never quotes a namespace the acting principal may not read (NamespacePolicy)."""
    from memos_integrations.langgraph import MemOSStore, make_recall_node

    store = MemOSStore(cube, index=True)
    store.put(("teams", "research", "facts"), "office", {"text": "I live in Lisbon."})
    store.put(("teams", "ops", "facts"), "office", {"text": "I live in Porto now."})
    store.put(NS_ANA, "home", {"text": "I live in Braga."})
    cube.add(memory="I live in Faro now.", user_id="ana")  # ana's own memory, not a store value
    organize(cube, reader=None)
    store.policy.grant(("teams", "research"), "user:ana", "read")
    ana = {"configurable": {"user_id": "ana"}}
    research = make_recall_node(store, namespace=("teams", "research", "facts"))({"messages": [("user", ASK)]}, ana)
    assert research == {"memories": [LISBON]}  # linked to ops' value, which ana may not read: no note
    app = make_recall_node(store, namespace=("teams", "research", "facts"))({"messages": [("user", ASK)]}, {})
    assert app == {"memories": [f"{LISBON}{_note(PORTO)}"]}  # the application itself reads every namespace
    own = make_recall_node(store)({"messages": [("user", ASK)]}, ana)["memories"]
    assert own == [f"I live in Braga.{_note('I live in Faro now.')}"]  # her own memory: shown


def test_the_langgraph_search_tool_carries_the_notes_beside_the_text(lg: Any) -> None:
    from memos_integrations.langgraph import make_memory_tools

    cube, store = lg
    search = next(t for t in make_memory_tools(store, top_k=5) if t.name == "search_memory")
    found = search.invoke({"query": ASK}, {"configurable": {"user_id": "ana"}})
    by_text = {f["text"]: f for f in found}
    assert by_text[PORTO]["conflicts"] == [LISBON] and by_text[LISBON]["conflicts"] == [PORTO]
    assert "Madrid" not in str(found)


def test_a_store_without_conflicts_recalls_plain_lines(cube: MemCube) -> None:
    from langgraph.store.memory import InMemoryStore

    from memos_integrations.langgraph import MemOSStore, make_recall_node

    store = MemOSStore(cube, index=True)
    store.put(NS_ANA, "tea", {"text": "My favourite tea is genmaicha."})
    organize(cube, reader=None)
    out = make_recall_node(store)({"messages": [("user", "tea?")]}, {"configurable": {"user_id": "ana"}})
    assert out == {"memories": ["My favourite tea is genmaicha."]}
    plain = InMemoryStore()  # any other BaseStore: no cube, no notes, no error
    plain.put(NS_ANA, "tea", {"text": "My favourite tea is genmaicha."})
    assert make_recall_node(plain)({"messages": [("user", "tea?")]}, {"configurable": {"user_id": "ana"}}) == out


# -- LlamaIndex: the retriever ----------------------------------------------------------------------------------
@pytest.fixture
def disputed(cube: MemCube) -> tuple[MemCube, MemoryItem, MemoryItem]:
    old = cube.add(memory=LISBON, user_id="ana", session_id="s1")[0]
    new = cube.add(memory=PORTO, user_id="ana", session_id="s2")[0]
    cube.add(memory="I live in Madrid.", user_id="bob", session_id="s1")
    cube.add(memory="I live in Faro now.", user_id="bob", session_id="s2")
    organize(cube, reader=None)
    return cube, old, new


def test_the_llama_index_retriever_marks_conflicts_in_metadata_shown_to_the_llm(disputed: Any, monkeypatch: Any) -> None:
    from llama_index.core.schema import MetadataMode

    from memos_integrations.llama_index import MemOSRetriever

    cube, old, new = disputed
    calls: list[int] = []
    edges = cube.graph.edges

    def counted(ids: Any, *a: Any, **kw: Any) -> Any:
        calls.append(len(ids))
        return edges(ids, *a, **kw)

    monkeypatch.setattr(cube.graph, "edges", counted)
    hits = MemOSRetriever(cube, user_id="ana", similarity_top_k=5).retrieve(ASK)
    marked = {h.node.get_content(metadata_mode=MetadataMode.NONE): h.node.metadata.get("conflicts") for h in hits}
    assert marked[PORTO] == [LISBON] and marked[LISBON] == [PORTO]  # the stored text itself is untouched
    assert len([c for c in calls if c == len(hits)]) == 1  # one batch for the page
    porto = next(h.node for h in hits if h.node.metadata.get("memory_id") == new.id)
    assert "I live in Lisbon." in porto.get_content(metadata_mode=MetadataMode.LLM)  # the model reads it
    assert "Lisbon" not in porto.get_content(metadata_mode=MetadataMode.EMBED)  # never embedded
    assert "Madrid" not in str([h.node.metadata for h in hits])


def test_the_llama_index_retriever_never_shows_another_users_memory(disputed: Any) -> None:
    from memos_integrations.llama_index import MemOSRetriever

    cube, old, new = disputed
    madrid = next(i for i in cube.get_all(user_id="bob") if "Madrid" in i.text)
    cube.graph.add_edges([Edge(new.id, madrid.id, CONFLICT, 1.0, {"status": "flagged"})])
    hits = MemOSRetriever(cube, user_id="ana", similarity_top_k=5).retrieve(ASK)
    assert {h.node.metadata.get("memory_id"): h.node.metadata.get("conflicts") for h in hits}[new.id] == [LISBON]
    assert "Madrid" not in str([h.node.metadata for h in hits])
    plain = [h for h in hits if h.node.metadata.get("memory_id") not in (old.id, new.id)]
    assert all("conflicts" not in h.node.metadata for h in plain)  # absent, not empty, when there are none
    bobs = MemOSRetriever(cube, user_id="bob", similarity_top_k=5).retrieve(ASK)
    shown = str([h.node.metadata.get("conflicts") for h in bobs])
    assert "Faro" in shown and "Lisbon" not in shown and "Porto" not in shown


# -- MCP: the search tool -------------------------------------------------------------------------------------
def test_the_mcp_search_tool_marks_conflicts_and_never_another_users(tmp_path: Path, embedder: Any) -> None:
    pytest.importorskip("mcp")
    from mcp import Client

    from memos_integrations.server.mcp import build_server

    with MOS(tmp_path / "home", embedder=embedder) as mos:
        for user in ("ana", "bob"):
            mos.create_user(user)
            mos.create_cube_for_user(f"{user}-c", owner_id=user)
        old = mos.add(memory_content=LISBON, mem_cube_id="ana-c", user_id="ana")[0]
        new = mos.add(memory_content=PORTO, mem_cube_id="ana-c", user_id="ana")[0]
        mos.add(memory_content="I live in Madrid.", mem_cube_id="bob-c", user_id="bob")
        mos.add(memory_content="I live in Faro now.", mem_cube_id="bob-c", user_id="bob")
        for cube_id in ("ana-c", "bob-c"):
            organize(mos._cube(cube_id), reader=None)

        async def search(user: str, **args: Any) -> list[dict[str, Any]]:
            async with Client(build_server(mos, lambda _headers: user)) as client:
                result = await client.call_tool("search_memory", {"query": ASK, "k": 5, **args})
                assert not result.is_error
                return list(result.structured_content["memories"])

        found = {m["id"]: m for m in asyncio.run(search("ana"))}
        assert found[new.id]["conflicts"] == [LISBON] and found[old.id]["conflicts"] == [PORTO]
        assert found[new.id]["text"] == PORTO  # the text stays the memory's own
        assert "Madrid" not in str(found) and "Faro" not in str(found)
        assert asyncio.run(search("ana", cube_id="ana-c")) == list(found.values())
        theirs = asyncio.run(search("bob"))
        assert "Faro" in str([m.get("conflicts") for m in theirs]) and "Lisbon" not in str(theirs)
