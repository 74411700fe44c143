"""Tool lessons (``fact`` items tagged ``tool_experience``) are shown by the tool-memory middleware before a
tool call, so no face's default recall returns them as ordinary memories (each face can opt in)."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.messages import HumanMessage

from memos_integrations import MemCube
from memos_integrations.toolmem import TAG, ToolMemory

QUERY = "Where is my order 12?"


def with_lesson(cube: MemCube) -> str:
    """An ordinary memory and a tool lesson about the same thing, for maya; the lesson's id."""
    cube.add(memory="Maya ordered a blue lamp, order 12.", user_id="maya")
    memory = ToolMemory(cube)
    memory.record("maya", "lookup_order", {"order_id": "#12"}, ok=False, error="digits only", error_class="OrderIdError")
    [lesson] = memory.experiences("maya")
    assert TAG in lesson.tags
    assert lesson.id in {h.item.id for h in cube.search(QUERY, user_id="maya")}  # a plain search finds it
    return lesson.id


def test_langchain_middleware_recall_skips_tool_lessons(cube: MemCube) -> None:
    from memos_integrations.langchain import MemOSMemoryMiddleware

    lesson = with_lesson(cube)
    recall = MemOSMemoryMiddleware(cube, user_id="maya").recall("maya", HumanMessage(QUERY, id="h1"))
    assert lesson not in recall["memory_ids"] and "blue lamp" in recall["text"]
    asked = MemOSMemoryMiddleware(cube, user_id="maya", include_tool_lessons=True).recall("maya", HumanMessage(QUERY, id="h1"))
    assert lesson in asked["memory_ids"]


def test_langgraph_recall_node_skips_tool_lessons(cube: MemCube) -> None:
    from memos_integrations.langgraph import MemOSStore
    from memos_integrations.langgraph.nodes import make_recall_node

    with_lesson(cube)
    store = MemOSStore(cube, index=True)
    store.put(("users", "maya", "memories"), "m1", {"text": "Maya's order 12 is a blue lamp."})
    recall = make_recall_node(store)
    out = recall({"messages": [("user", QUERY)]}, {"configurable": {"user_id": "maya"}})
    assert out["memories"] == ["Maya's order 12 is a blue lamp."]  # the lesson lives outside the store's namespaces


def test_llama_index_memory_block_skips_tool_lessons(cube: MemCube) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    from memos_integrations.llama_index import MemOSMemoryBlock

    with_lesson(cube)
    block = MemOSMemoryBlock.from_defaults(cube, user_id="maya")
    text: Any = asyncio.run(block._aget([ChatMessage(role="user", content=QUERY)]))
    assert "blue lamp" in text and "lookup_order" not in text
    asked = MemOSMemoryBlock.from_defaults(cube, user_id="maya", include_tool_lessons=True)
    assert "lookup_order" in asyncio.run(asked._aget([ChatMessage(role="user", content=QUERY)]))
