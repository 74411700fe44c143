"""LangMem (a real client we did not write) on MemOSStore: its manage/search tools and its store manager,
inside real graphs with two agents and two users; isolation comes from the store, not from wrappers.

The only stand-in is the chat model (no model can run offline here): ``ScriptedChatModel`` answers every
call with one tool call, so LangMem's store manager runs its real search / extract / put path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("langmem")

from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode  # noqa: E402
from langmem import create_manage_memory_tool, create_memory_store_manager, create_search_memory_tool  # noqa: E402

from memos_integrations.errors import AccessDeniedError  # noqa: E402
from memos_integrations.langgraph import MemOSStore, NamespacePolicy  # noqa: E402

LONG = ("The customer described the outage in great detail. " * 800)[:40_000]


class ScriptedChatModel(BaseChatModel):
    """TEST-ONLY chat model: every call returns one tool call of the first bound tool with ``args``."""

    args: dict[str, Any] = {}
    tool_names: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        return self.model_copy(update={"tool_names": names})

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        call = {"name": self.tool_names[0], "args": self.args, "id": "call-1", "type": "tool_call"}
        return ChatResult(generations=[ChatGeneration(message=AIMessage("", tool_calls=[call]))])


def _agents_graph(store: MemOSStore) -> Any:
    """Two agents (subgraphs with LangMem tools in a ToolNode) under one parent; each agent runs with its
    own ``agent_id`` in configurable; the parent graph passes its (plain) store down to both."""
    tools = [
        create_manage_memory_tool(namespace=("agents", "{agent_id}", "notes")),
        create_search_memory_tool(namespace=("agents",)),  # a prefix: every agent's notes, if allowed
        create_manage_memory_tool(namespace=("memories", "{user_id}"), name="manage_user_memory"),
        create_search_memory_tool(namespace=("memories",), name="search_user_memory"),
    ]

    def agent_subgraph() -> Any:
        sub = StateGraph(MessagesState)
        sub.add_node("tools", ToolNode(tools))
        sub.add_edge(START, "tools")
        sub.add_edge("tools", END)
        return sub.compile(store=store.as_principal("ignored-by-langgraph"))  # LangGraph uses the parent's store

    subs = {"scout": agent_subgraph(), "writer": agent_subgraph()}
    parent = StateGraph(MessagesState)
    for name, sub in subs.items():
        parent.add_node(name, lambda state, sub=sub, name=name: sub.invoke(state, {"configurable": {"agent_id": name}}))
    parent.add_conditional_edges(START, lambda s: s["messages"][-1].additional_kwargs["agent"], list(subs))
    parent.add_edge("scout", END)
    parent.add_edge("writer", END)
    return parent.compile(store=store)


def _call(graph: Any, agent: str, user: str, tool: str, args: dict[str, Any]) -> str:
    msg = AIMessage("", tool_calls=[{"name": tool, "args": args, "id": "c1", "type": "tool_call"}],
                    additional_kwargs={"agent": agent})
    out = graph.invoke({"messages": [msg]}, {"configurable": {"thread_id": f"{agent}-{user}", "user_id": user}})
    return str(out["messages"][-1].content)


@pytest.fixture
def policy_store(cube: Any) -> MemOSStore:
    # LangMem's ("memories", user) root made private per user; agents/ and users/ are private by default
    policy = NamespacePolicy(cube, private_roots={"agents": "agent_id", "users": "user_id", "memories": "user_id"})
    return MemOSStore(cube, index={"fields": ["content"]}, policy=policy)


def test_langmem_tools_in_two_agent_graph_are_isolated(policy_store: MemOSStore, cube: Any) -> None:
    graph = _agents_graph(policy_store)
    assert "created memory" in _call(graph, "scout", "alice", "manage_memory", {"content": "competitor pricing looked rushed"})
    assert "created memory" in _call(graph, "writer", "alice", "manage_memory", {"content": "draft: pricing headline"})
    # a search over every agent's notes returns only the searching agent's own
    found = json.loads(_call(graph, "writer", "alice", "search_memory", {"query": "pricing"}))
    assert [f["namespace"] for f in found] == [["agents", "writer", "notes"]]
    found = json.loads(_call(graph, "scout", "alice", "search_memory", {"query": "pricing"}))
    assert [f["value"]["content"] for f in found] == ["competitor pricing looked rushed"]
    # users: LangMem's root, private per user by the policy above
    _call(graph, "scout", "alice", "manage_user_memory", {"content": "alice is allergic to peanuts"})
    _call(graph, "scout", "bob", "manage_user_memory", {"content": "bob likes peanuts"})
    bob_sees = json.loads(_call(graph, "writer", "bob", "search_user_memory", {"query": "peanuts"}))
    assert [f["value"]["content"] for f in bob_sees] == ["bob likes peanuts"]
    # the admin view (outside any run) still sees everything
    assert len(policy_store.search(("agents",), limit=10)) == 2 and len(policy_store.search(("memories",), limit=10)) == 2


def test_langmem_tool_cannot_delete_another_agents_note(policy_store: MemOSStore, cube: Any) -> None:
    graph = _agents_graph(policy_store)
    _call(graph, "scout", "alice", "manage_memory", {"content": "scout's private note"})
    key = policy_store.search(("agents", "scout"), limit=1)[0].key
    # LangMem's tool deletes under its own template (the writer's namespace): the scout's note survives
    _call(graph, "writer", "alice", "manage_memory", {"action": "delete", "id": key})
    assert policy_store.get(("agents", "scout", "notes"), key) is not None


def test_langmem_search_tool_blank_and_long_queries_do_not_crash(policy_store: MemOSStore) -> None:
    graph = _agents_graph(policy_store)
    _call(graph, "scout", "alice", "manage_memory", {"content": "the launch is in June"})
    blank = json.loads(_call(graph, "scout", "alice", "search_memory", {"query": " "}))
    assert [f["value"]["content"] for f in blank] == ["the launch is in June"]
    long = json.loads(_call(graph, "scout", "alice", "search_memory", {"query": LONG}))
    assert len(long) == 1
    assert "created memory" in _call(graph, "scout", "alice", "manage_memory", {"content": LONG})
    assert len(json.loads(_call(graph, "scout", "alice", "search_memory", {"query": "outage detail"}))) == 2


def test_strict_policy_refuses_langmem_default_root(cube: Any) -> None:
    store = MemOSStore(cube, index={"fields": ["content"]}, policy=NamespacePolicy(cube, strict=True))
    graph = _agents_graph(store)
    with pytest.raises(AccessDeniedError, match="may not write"):
        _call(graph, "scout", "alice", "manage_user_memory", {"content": "x"})
    assert store.search(("memories",)) == []
    assert any(not e["allowed"] and e["target"] == "ns:memories.alice" for e in cube.audit_log())


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_langmem_store_manager_on_a_40k_message(policy_store: MemOSStore, use_async: bool) -> None:
    model = ScriptedChatModel(args={"content": "The customer had an outage"})
    manager = create_memory_store_manager(model, namespace=("memories", "{user_id}"), store=policy_store)
    builder = StateGraph(MessagesState)

    if use_async:
        async def extract(state: MessagesState) -> dict[str, Any]:
            await manager.ainvoke({"messages": state["messages"]})
            return {}
    else:
        def extract(state: MessagesState) -> dict[str, Any]:  # type: ignore[misc]
            manager.invoke({"messages": state["messages"]})
            return {}

    builder.add_node("extract", extract)
    builder.add_edge(START, "extract")
    graph = builder.compile(store=policy_store)
    config = {"configurable": {"thread_id": "t", "user_id": "alice"}}
    if use_async:
        import asyncio

        asyncio.run(graph.ainvoke({"messages": [HumanMessage(LONG)]}, config))
    else:
        graph.invoke({"messages": [HumanMessage(LONG)]}, config)
    saved = policy_store.search(("memories", "alice"))
    assert [s.value["content"]["content"] for s in saved] == ["The customer had an outage"]
    # bob's run of the same manager cannot touch alice's namespace
    bob_manager = create_memory_store_manager(model, namespace=("memories", "alice"), store=policy_store)
    builder = StateGraph(MessagesState)
    builder.add_node("extract", lambda s: bob_manager.invoke({"messages": s["messages"]}) and {})
    builder.add_edge(START, "extract")
    with pytest.raises(AccessDeniedError):
        builder.compile(store=policy_store).invoke({"messages": [HumanMessage("hi")]},
                                                   {"configurable": {"thread_id": "b", "user_id": "bob"}})
