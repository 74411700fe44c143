"""Recall / remember nodes and the memory tools, inside real graphs (ToolNode included)."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest

pytest.importorskip("langgraph.prebuilt")

from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode  # noqa: E402

from memos_integrations.errors import InvalidInputError  # noqa: E402
from memos_integrations.langgraph import (  # noqa: E402
    MemOSSaver,
    MemOSStore,
    make_memory_tools,
    make_recall_node,
    make_remember_node,
)


class ChatState(MessagesState):
    memories: Annotated[list[str], operator.add]


def _graph(cube: Any) -> tuple[Any, MemOSStore]:
    store = MemOSStore(cube, index=True)
    builder = StateGraph(ChatState)
    builder.add_node("recall", make_recall_node(store))
    builder.add_node("remember", make_remember_node(store))
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "remember")
    builder.add_edge("remember", END)
    return builder.compile(checkpointer=MemOSSaver(cube), store=store), store


def test_remember_then_recall_with_provenance(cube: Any) -> None:
    graph, store = _graph(cube)
    alice = {"configurable": {"thread_id": "t1", "user_id": "alice"}}
    graph.invoke({"messages": [HumanMessage("I am vegetarian and I live in Porto")]}, alice)
    out = graph.invoke({"messages": [HumanMessage("what food should I cook tonight?")]},
                       {"configurable": {"thread_id": "t2", "user_id": "alice"}})
    assert "I am vegetarian and I live in Porto" in out["memories"]
    stored = store.search(("users", "alice", "memories"), query="vegetarian", limit=1)[0]
    item = cube.search("vegetarian Porto", user_id="alice")[0].item
    assert item.metadata["lg_store"]["key"] == stored.key
    assert "thread:t1" in item.sources and "user:alice" in item.sources
    checkpoint = [s for s in item.sources if s.startswith("checkpoint:")][0].split(":", 1)[1]
    ids = [t.checkpoint["id"] for t in graph.checkpointer.list({"configurable": {"thread_id": "t1"}})]
    assert checkpoint in ids  # the memory points at a real checkpoint of the thread it came from
    # another user's recall sees nothing of alice's
    bob = graph.invoke({"messages": [HumanMessage("what do I eat?")]}, {"configurable": {"thread_id": "t3", "user_id": "bob"}})
    assert not any("vegetarian" in m for m in bob["memories"])


def test_missing_user_in_config_is_a_clear_error(cube: Any) -> None:
    graph, store = _graph(cube)
    with pytest.raises(InvalidInputError, match="user_id"):
        graph.invoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "t"}})
    assert store.list_namespaces() == []


def test_tools_in_a_toolnode(cube: Any) -> None:
    store = MemOSStore(cube, index=True)
    tools = make_memory_tools(store)
    assert [t.name for t in tools] == ["search_memory", "save_memory", "forget_memory"]
    node = ToolNode(tools)
    builder = StateGraph(MessagesState)
    builder.add_node("tools", node)
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    graph = builder.compile(store=store)
    config = {"configurable": {"thread_id": "t", "user_id": "carol"}}

    def call(name: str, args: dict[str, Any]) -> str:
        msg = AIMessage("", tool_calls=[{"name": name, "args": args, "id": "c1", "type": "tool_call"}])
        return str(graph.invoke({"messages": [msg]}, config)["messages"][-1].content)

    key = call("save_memory", {"text": "Carol's dog is called Biscuit"})
    assert "Biscuit" in call("search_memory", {"query": "what is the dog's name?"})
    assert "forgot" in call("forget_memory", {"memory_id": key})
    assert "Biscuit" not in call("search_memory", {"query": "dog name"})
    assert store.list_namespaces() == []
