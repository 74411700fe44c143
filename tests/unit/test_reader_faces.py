"""The faces write through the LLM reader: the LangGraph remember node and store, the LangChain tools and
middleware, the LlamaIndex memory block; feedback is a tool. The model is a rule-based LangChain chat
model (tests/unit/test_reader.py::RuleChat), offline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.readers import LLMReader
from tests.unit.test_reader import RuleChat


@pytest.fixture
def rcube(tmp_path: Path, embedder: Any) -> Any:
    c = MemCube.init_from_dir(tmp_path / "cube", embedder=embedder, reader=LLMReader.from_langchain(RuleChat()))
    yield c
    c.close()


def facts(cube: Any, user: str) -> list[str]:
    return [h.item.text for h in cube.search("where does the user live?", user_id=user, kinds=["fact"])]


def test_langgraph_remember_node_and_store_follow_the_reader(rcube: Any) -> None:
    from memos_integrations.langgraph import MemOSStore
    from memos_integrations.langgraph.nodes import make_memory_tools, make_recall_node, make_remember_node

    store = MemOSStore(rcube, index=True)
    remember = make_remember_node(store, mode="fine")
    recall = make_recall_node(store)
    config: Any = {"configurable": {"user_id": "maya", "thread_id": "t1"}}
    remember({"messages": [("user", "I live in Lisbon")]}, config)
    remember({"messages": [("user", "where do I live?")]}, config)  # a question is not a memory
    remember({"messages": [("user", "I moved to Porto")]}, config)
    assert [i.value["text"] for i in store.search(("users", "maya", "memories"))] == ["maya lives in Porto"]
    assert recall({"messages": [("user", "where do I live?")]}, config) == {"memories": ["maya lives in Porto"]}
    tools = {t.name: t for t in make_memory_tools(store)}
    out = tools["correct_memory"].invoke({"correction": "Actually I live in Faro, not Porto"}, config)
    assert out.startswith("UPDATE")
    assert [i.value["text"] for i in store.search(("users", "maya", "memories"))] == ["maya lives in Faro"]


def test_langchain_tools_offer_feedback(rcube: Any) -> None:
    from memos_integrations.langchain.tools import create_memory_tools

    rcube.add(messages=[{"role": "user", "name": "maya", "content": "I live in Lisbon"}], user_id="maya")
    tools = {t.name: t for t in create_memory_tools(rcube, "maya")}
    assert tools["correct_memory"].invoke({"correction": "I moved to Porto"}).startswith("SUPERSEDE")
    assert facts(rcube, "maya") == ["maya lives in Porto"]


def test_tools_without_a_reader_are_unchanged(cube: Any) -> None:
    from memos_integrations.langchain.tools import create_memory_tools

    assert [t.name for t in create_memory_tools(cube, "maya")] == ["search_memory", "save_memory", "forget_memory"]


def test_langchain_middleware_reader_mode(rcube: Any) -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    from memos_integrations.langchain.middleware import MemOSMemoryMiddleware

    mw = MemOSMemoryMiddleware(rcube, user_id="maya", reader_mode="fine")
    mw.after_agent({"messages": [HumanMessage("I live in Lisbon", id="h1"), AIMessage("Nice!", id="a1")]}, None)  # type: ignore[arg-type]
    assert "Lisbon" in " ".join(facts(rcube, "maya"))


def test_llama_index_memory_block_reader_mode(rcube: Any) -> None:
    from llama_index.core.llms import ChatMessage

    from memos_integrations.llama_index.memory_block import MemOSMemoryBlock

    block = MemOSMemoryBlock.from_defaults(rcube, user_id="maya", reader_mode="fine")
    asyncio.run(block.aput([ChatMessage(role="user", content="I live in Lisbon")]))
    asyncio.run(block.aput([ChatMessage(role="user", content="I moved to Porto")]))
    assert facts(rcube, "maya") == ["user lives in Porto"]
