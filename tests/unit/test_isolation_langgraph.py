"""Isolation in the LangGraph face: two users (alice, bob), two agents (scout, writer), every read, write,
delete, list and search path of the saver, the store and the memory nodes, run the way LangGraph runs
them (injected store, ``get_store()``, ``InjectedStore`` tools, subgraphs, ``context=``), sync and async.

The reproductions of issue 9 (items 9-11), 12-14 (LangGraph side) and 15.3 are marked ``repro``.
"""

from __future__ import annotations

import asyncio
import json
import operator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import numpy as np
import pytest

pytest.importorskip("langgraph.prebuilt")

from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402
from langgraph.config import get_store  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import InjectedStore, ToolNode  # noqa: E402
from langgraph.runtime import Runtime  # noqa: E402
from langgraph.store.memory import InMemoryStore  # noqa: E402

from memos_integrations.errors import AccessDeniedError, EmbedderMismatchError, InvalidInputError  # noqa: E402
from memos_integrations.langgraph import (  # noqa: E402
    AsyncMemOSSaver,
    MemOSSaver,
    MemOSStore,
    NamespacePolicy,
    make_memory_tools,
    make_recall_node,
    make_remember_node,
)

BOTH = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])


def run_as(config: dict[str, Any], call: Any, use_async: bool = False) -> Any:
    """Run ``call(store_method_suffix)`` inside a LangChain run with ``config`` (so get_config() sees it)."""
    if use_async:
        async def body(_: Any) -> Any:
            return await call("a")
        return asyncio.run(RunnableLambda(body).ainvoke(None, config))

    def sync_body(_: Any) -> Any:
        return call("")
    return RunnableLambda(sync_body).invoke(None, config)


def user(name: str, **more: Any) -> dict[str, Any]:
    return {"configurable": {"user_id": name, **more}}


def denied(cube: Any) -> list[dict[str, Any]]:
    return [e for e in cube.audit_log() if not e["allowed"]]


@pytest.fixture
def store(cube: Any) -> MemOSStore:
    s = MemOSStore(cube, index=True, policy=NamespacePolicy(cube))  # the default policy, named for older versions
    s.put(("users", "alice", "memories"), "a1", {"text": "alice is allergic to peanuts"})
    s.put(("users", "bob", "memories"), "b1", {"text": "bob likes peanut butter"})
    s.put(("agents", "scout", "notes"), "s1", {"text": "scout: competitor pricing looked rushed"})
    s.put(("agents", "writer", "notes"), "w1", {"text": "writer: pricing headline draft"})
    return s


# -- the store: every path, as the principal of the run -------------------------------------------------
@BOTH
def test_store_refuses_or_filters_another_users_namespace(store: MemOSStore, cube: Any, use_async: bool) -> None:
    def op(name: str, *args: Any, **kw: Any) -> Any:
        return lambda a: getattr(store, a + name)(*args, **kw)

    bob = user("bob")
    for call in (op("get", ("users", "alice", "memories"), "a1"),
                 op("put", ("users", "alice", "memories"), "x", {"text": "bob was here"}),
                 op("delete", ("users", "alice", "memories"), "a1"),
                 op("search", ("users", "alice"), query="peanuts")):
        with pytest.raises(AccessDeniedError):
            run_as(bob, call, use_async)
    found = run_as(bob, op("search", ("users",), query="peanuts", limit=10), use_async)
    assert [h.key for h in found] == ["b1"]
    assert run_as(bob, op("search", (), limit=10), use_async)[0].key == "b1"  # agents/ are not bob's either
    assert run_as(bob, op("list_namespaces"), use_async) == [("users", "bob", "memories")]
    assert store.get(("users", "alice", "memories"), "a1") is not None  # nothing was written or deleted
    assert store.get(("users", "alice", "memories"), "x") is None
    assert {e["principal"] for e in denied(cube)} == {"user:bob"}


@BOTH
def test_store_separates_agents_of_one_user(store: MemOSStore, use_async: bool) -> None:
    writer = user("alice", agent_id="writer")
    with pytest.raises(AccessDeniedError):
        run_as(writer, lambda a: getattr(store, a + "get")(("agents", "scout", "notes"), "s1"), use_async)
    hits = run_as(writer, lambda a: getattr(store, a + "search")(("agents",), query="pricing"), use_async)
    assert [h.key for h in hits] == ["w1"]
    # the agent acts for alice too: her user namespace is readable, bob's is not
    hits = run_as(writer, lambda a: getattr(store, a + "search")(("users",), query="peanut"), use_async)
    assert [h.key for h in hits] == ["a1"]


@BOTH
def test_store_async_returns_what_sync_returns(store: MemOSStore, use_async: bool) -> None:
    """One body both ways: abatch and batch give the same results for the same principal."""
    alice = user("alice")

    def everything(a: str) -> Any:
        if a:
            async def go() -> Any:
                return ([h.key for h in await store.asearch(("users",), query="peanut")],
                        await store.alist_namespaces(), (await store.aget(("users", "alice", "memories"), "a1")).value)
            return go()
        return ([h.key for h in store.search(("users",), query="peanut")], store.list_namespaces(),
                store.get(("users", "alice", "memories"), "a1").value)

    assert run_as(alice, everything, use_async) == (["a1"], [("users", "alice", "memories")],
                                                     {"text": "alice is allergic to peanuts"})


def test_repro_injected_store_get_store_and_injected_store_tool_are_scoped(store: MemOSStore) -> None:
    """repro 9: LangGraph's injected store is the plain store; the run's user must still bind it."""
    @tool
    def peek(prefix: list[str], store: Annotated[Any, InjectedStore()]) -> str:
        """List the keys under a namespace prefix."""
        return json.dumps([h.key for h in store.search(tuple(prefix), limit=10)])

    def node(state: MessagesState, runtime: Runtime) -> dict[str, Any]:
        keys = [h.key for h in runtime.store.search(("users",), limit=10)] + [h.key for h in get_store().search((), limit=10)]
        return {"messages": [AIMessage(json.dumps(keys), tool_calls=[
            {"name": "peek", "args": {"prefix": ["users"]}, "id": "c1", "type": "tool_call"}])]}

    builder = StateGraph(MessagesState)
    builder.add_node("node", node)
    builder.add_node("tools", ToolNode([peek]))
    builder.add_edge(START, "node")
    builder.add_edge("node", "tools")
    graph = builder.compile(store=store)
    out = graph.invoke({"messages": [HumanMessage("hi")]}, user("bob"))
    assert json.loads(out["messages"][1].content) == ["b1", "b1"]
    assert json.loads(out["messages"][2].content) == ["b1"]

    def read_alices(state: MessagesState, runtime: Runtime) -> dict[str, Any]:
        runtime.store.get(("users", "alice", "memories"), "a1")
        return {}

    by_context = StateGraph(MessagesState, context_schema=UserCtx)
    by_context.add_node("read", read_alices)
    by_context.add_edge(START, "read")
    with pytest.raises(AccessDeniedError):  # the run's context names the user just as well
        by_context.compile(store=store).invoke({"messages": []}, context={"user_id": "bob"})


def test_repro_subgraph_compiled_with_scoped_store_is_still_scoped(store: MemOSStore) -> None:
    """repro 9: a subgraph compiled with ``as_principal`` gets the parent's plain store from LangGraph."""
    seen: dict[str, list[str]] = {}

    def agent(name: str) -> Any:
        def think(state: MessagesState) -> dict[str, Any]:
            seen[name] = sorted(h.key for h in get_store().search(("agents",), query="pricing", limit=10))
            return {}
        sub = StateGraph(MessagesState)
        sub.add_node("think", think)
        sub.add_edge(START, "think")
        return sub.compile(store=store.as_principal(name))

    parent = StateGraph(MessagesState)
    parent.add_node("scout", agent("scout").with_config(configurable={"agent_id": "scout"}))
    writer = agent("writer")
    parent.add_node("writer", lambda s: writer.invoke(s, {"configurable": {"agent_id": "writer"}}))
    parent.add_edge(START, "scout")
    parent.add_edge("scout", "writer")
    parent.compile(store=store).invoke({"messages": []}, user("alice"))
    assert seen == {"scout": ["s1"], "writer": ["w1"]}


def test_as_principal_keeps_working_and_a_conflicting_run_is_refused(store: MemOSStore, cube: Any) -> None:
    scout = store.as_principal("scout")
    assert scout.get(("agents", "scout", "notes"), "s1") is not None
    with pytest.raises(AccessDeniedError):
        scout.get(("agents", "writer", "notes"), "w1")
    with pytest.raises(AccessDeniedError, match="cannot act for another"):
        RunnableLambda(lambda _: scout.get(("agents", "scout", "notes"), "s1")).invoke(None, user("alice", agent_id="writer"))
    assert any(e["action"] == "scope" for e in denied(cube))


def test_default_policy_leaves_unknown_roots_open_and_strict_closes_them(cube: Any) -> None:
    """repro 9: LangMem's default root ("memories", user) is open under the default policy (documented)."""
    open_store = MemOSStore(cube)
    open_store.put(("memories", "alice"), "m", {"text": "alice's note"})
    assert RunnableLambda(lambda _: open_store.get(("memories", "alice"), "m")).invoke(None, user("bob")) is not None
    strict = MemOSStore(cube, policy=NamespacePolicy(cube, strict=True))
    with pytest.raises(AccessDeniedError):
        RunnableLambda(lambda _: strict.get(("memories", "alice"), "m")).invoke(None, user("bob"))
    with pytest.raises(AccessDeniedError, match="strict"):  # a run naming nobody
        RunnableLambda(lambda _: strict.get(("users", "alice"), "m")).invoke(None, {"configurable": {}})
    NamespacePolicy(cube, strict=True).grant(("memories", "alice"), "user:alice", "write")
    assert RunnableLambda(lambda _: strict.get(("memories", "alice"), "m")).invoke(None, user("alice")) is not None
    assert strict.get(("memories", "alice"), "m") is not None  # outside a run: the application itself
    assert RunnableLambda(lambda _: strict.search(("memories",))).invoke(None, user("alice"))[0].key == "m"


def test_a_user_named_like_an_agent_owns_nothing_under_agents(store: MemOSStore) -> None:
    with pytest.raises(AccessDeniedError):
        RunnableLambda(lambda _: store.get(("agents", "scout", "notes"), "s1")).invoke(None, user("scout"))


# -- store robustness (12-14) ------------------------------------------------------------------------------
def test_repro_blank_query_returns_what_inmemorystore_returns(cube: Any, embedder: Any) -> None:
    ref = InMemoryStore(index={"dims": 384, "embed": lambda t: embedder.embed_documents(t).tolist(), "fields": ["text"]})
    ours = MemOSStore(cube, index={"fields": ["text"]})
    for s in (ref, ours):
        s.put(("users", "alice"), "k1", {"text": "tea"})
        s.put(("users", "alice"), "k2", {"text": "coffee"})
    for query in (" ", "\n\t"):
        assert sorted(h.key for h in ours.search(("users",), query=query)) == sorted(h.key for h in ref.search(("users",), query=query))


def test_repro_40k_value_and_query_are_stored_and_searched(cube: Any) -> None:
    store = MemOSStore(cube, index=True)
    long = ("The outage started in the billing service and spread. " * 800)[:40_000]
    store.put(("users", "alice"), "long", {"text": long})
    store.put(("users", "alice"), "short", {"text": "a note about lunch"})
    assert store.search(("users",), query=long)[0].key == "long"
    assert store.search(("users",), query="billing outage")[0].key == "long"
    store.delete(("users", "alice"), "long")
    assert [h.key for h in store.search(("users",), query="billing outage")] == ["short"]


def test_repro_custom_embed_of_another_model_is_refused(cube: Any, embedder: Any) -> None:
    """repro 11: another 384-dim model passed the dims check and mixed two vector spaces in one cube."""
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.normal(size=(384, 384)))[0].astype(np.float32)

    def other_model(texts: list[str]) -> list[list[float]]:
        return (embedder.embed_documents(texts) @ rotation).tolist()

    with pytest.raises(EmbedderMismatchError, match="another vector space"):
        MemOSStore(cube, index={"dims": 384, "embed": other_model, "fields": ["text"]})
    same = MemOSStore(cube, index={"dims": 384, "embed": lambda t: embedder.embed_documents(t).tolist()})
    same.put(("a",), "k", {"text": "same model, same space"})
    MemOSStore(cube, index={"embed": embedder})  # the cube's own embedder object


# -- the saver ------------------------------------------------------------------------------------------------
class Log(TypedDict):
    log: Annotated[list[str], operator.add]


def _graph(saver: MemOSSaver, **kw: Any) -> Any:
    builder = StateGraph(Log, **kw)
    builder.add_node("a", lambda s: {"log": ["a"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", END)
    return builder.compile(checkpointer=saver)


def _thread(user_id: str, thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, "user_id": user_id}}


def test_repro_bob_cannot_copy_list_prune_or_delete_alices_threads(cube: Any) -> None:
    """repro 15.3: copy_thread, delete_thread and list(None) took no user."""
    saver = MemOSSaver(cube)
    graph = _graph(saver)
    graph.invoke({"log": []}, _thread("alice", "ta"))
    saver.put({"configurable": {**_thread("alice", "ta")["configurable"], "checkpoint_ns": "side"}},
              empty_checkpoint(), {"source": "input", "step": -1, "run_id": "run-a"}, {})
    graph.invoke({"log": []}, _thread("bob", "tb"))
    bob = saver.for_user("bob")
    for attempt in (lambda: bob.copy_thread("ta", "stolen"), lambda: bob.delete_thread("ta"),
                    lambda: bob.prune(["ta"], strategy="delete"), lambda: bob.copy_thread("tb", "ta")):
        with pytest.raises(AccessDeniedError) as err:
            attempt()
        assert "alice" not in str(err.value)
    assert {t.config["configurable"]["thread_id"] for t in bob.list(None)} == {"tb"}
    assert {t.config["configurable"]["thread_id"] for t in saver.list({"configurable": {"user_id": "bob"}})} == {"tb"}
    with pytest.raises(AccessDeniedError):
        bob.delete_for_runs(["run-a"])
    assert len(list(saver.list(_thread("alice", "ta")))) == 4  # nothing of alice's was touched
    assert saver.get_tuple({"configurable": {"thread_id": "stolen"}}) is None
    assert len([e for e in denied(cube) if e["principal"] == "bob"]) == 5
    bob.copy_thread("tb", "tb2")  # bob's own: fine, and the copy is his
    with pytest.raises(AccessDeniedError):
        saver.get_tuple(_thread("alice", "tb2"))


def test_repro_require_user_refuses_anonymous_calls(cube: Any) -> None:
    """repro 10: update_state / delete_thread / list(None) without a user acted on anyone's thread."""
    saver = MemOSSaver(cube, require_user=True)
    graph = _graph(saver)
    graph.invoke({"log": []}, _thread("alice", "t"))
    anonymous = {"configurable": {"thread_id": "t"}}
    for attempt in (lambda: graph.update_state(anonymous, {"log": ["forged"]}), lambda: graph.get_state(anonymous),
                    lambda: list(saver.list(None)), lambda: saver.delete_thread("t"), lambda: saver.copy_thread("t", "u"),
                    lambda: saver.prune(["t"]), lambda: saver.delete_for_runs(["r"]),
                    lambda: graph.invoke({"log": []}, {"configurable": {"thread_id": "new"}})):
        with pytest.raises(AccessDeniedError, match="needs a user"):
            attempt()
    assert len(denied(cube)) == 8
    assert graph.get_state(_thread("alice", "t")).values["log"] == ["a"]
    with pytest.raises(AccessDeniedError):  # and a user acts only on their own
        graph.update_state(_thread("bob", "t"), {"log": ["forged"]})


def test_repro_int_user_id_is_normalised(cube: Any) -> None:
    """repro 10: an int user_id made MemOSSaver refuse every run (LangGraph's savers accept it)."""
    graph = _graph(MemOSSaver(cube))
    assert graph.invoke({"log": []}, _thread(7, "t"))["log"] == ["a"]  # type: ignore[arg-type]
    assert graph.get_state(_thread("7", "t")).values["log"] == ["a"]
    with pytest.raises(AccessDeniedError):
        graph.get_state(_thread(8, "t"))  # type: ignore[arg-type]


def test_context_user_owns_the_thread(cube: Any) -> None:
    @dataclass
    class Ctx:
        user_id: str

    graph = _graph(MemOSSaver(cube), context_schema=Ctx)
    graph.invoke({"log": []}, {"configurable": {"thread_id": "t"}}, context=Ctx("alice"))
    with pytest.raises(AccessDeniedError):
        graph.invoke({"log": []}, {"configurable": {"thread_id": "t"}}, context=Ctx("bob"))
    with pytest.raises(AccessDeniedError, match="different user_ids"):
        graph.invoke({"log": []}, _thread("alice", "t"), context=Ctx("bob"))


def test_repro_from_mos_without_user_is_refused(tmp_path: Any, embedder: Any) -> None:
    """repro 15.3: with from_mos a config without user_id skipped the MOS check entirely."""
    from memos_integrations import MOS, MemCube

    mos = MOS(tmp_path / "mos", embedder=embedder)
    mos.create_user("alice")
    mos.create_user("eve")
    MemCube.init_from_dir(tmp_path / "cube", embedder=embedder).close()
    mos.register_mem_cube(tmp_path / "cube", mem_cube_id="c", user_id="alice")
    try:
        saver = MemOSSaver.from_mos(mos, "c")
        with pytest.raises(AccessDeniedError, match="needs a user"):
            _graph(saver).invoke({"log": []}, {"configurable": {"thread_id": "t"}})
        _graph(saver).invoke({"log": []}, _thread("alice", "t"))
        with pytest.raises(AccessDeniedError):
            saver.for_user("eve").delete_thread("t")
        assert saver.get_tuple(_thread("alice", "t")) is not None
    finally:
        mos.close()


@BOTH
def test_saver_async_returns_what_sync_returns(cube: Any, use_async: bool) -> None:
    saver = MemOSSaver(cube)
    graph = _graph(saver)
    graph.invoke({"log": []}, _thread("alice", "t"))
    graph.invoke({"log": []}, _thread("bob", "u"))

    async def alist(config: Any) -> list[Any]:
        return [t async for t in saver.alist(config)]

    def get(config: Any) -> Any:
        return asyncio.run(saver.aget_tuple(config)) if use_async else saver.get_tuple(config)

    def listed(config: Any) -> list[Any]:
        return asyncio.run(alist(config)) if use_async else list(saver.list(config))

    tup = get(_thread("alice", "t"))
    assert tup.config["configurable"]["user_id"] == "alice" and tup.checkpoint["channel_values"]["log"] == ["a"]
    assert [t.config for t in listed({"configurable": {"user_id": "bob"}})] == [t.config for t in saver.list(_thread("bob", "u"))]
    with pytest.raises(AccessDeniedError):
        get(_thread("bob", "t"))
    bob = saver.for_user("bob")
    with pytest.raises(AccessDeniedError):
        asyncio.run(bob.adelete_thread("t")) if use_async else bob.delete_thread("t")


def test_async_saver_refuses_a_sync_call_from_its_loop(cube: Any) -> None:
    async def main() -> None:
        saver = AsyncMemOSSaver(cube)
        with pytest.raises(InvalidInputError, match="event loop"):
            saver.get_tuple({"configurable": {"thread_id": "t"}})
        graph = _graph(saver)
        assert (await graph.ainvoke({"log": []}, _thread("alice", "t")))["log"] == ["a"]
        assert (await saver.aget_tuple(_thread("alice", "t"))) is not None

    asyncio.run(main())
    with pytest.raises(InvalidInputError, match="running event loop"):
        AsyncMemOSSaver(cube)


# -- nodes and tools ------------------------------------------------------------------------------------------
class Chat(MessagesState):
    memories: Annotated[list[str], operator.add]


class UserCtx(TypedDict):
    user_id: str


def _memory_graph(cube: Any, store: MemOSStore, **kw: Any) -> Any:
    builder = StateGraph(Chat, context_schema=UserCtx)
    builder.add_node("recall", make_recall_node(store, **kw))
    builder.add_node("remember", make_remember_node(store, **kw))
    builder.add_edge(START, "recall")
    builder.add_edge("recall", "remember")
    return builder.compile(checkpointer=MemOSSaver(cube), store=store)


def test_repro_nodes_take_the_user_from_context(cube: Any, store: MemOSStore) -> None:
    """repro 10: nodes read user_id only from configurable, never from context=."""
    graph = _memory_graph(cube, store)
    out = graph.invoke({"messages": [HumanMessage("any food allergies?")]}, {"configurable": {"thread_id": "t"}},
                       context={"user_id": "alice"})
    assert out["memories"] == ["alice is allergic to peanuts"]
    out = graph.invoke({"messages": [HumanMessage("any food allergies?")]}, {"configurable": {"thread_id": "u"}},
                       context={"user_id": "bob"})
    assert "alice is allergic to peanuts" not in out["memories"]
    item = [h for h in store.search(("users", "bob", "memories"), limit=10) if h.key != "b1"][0]
    assert "user:bob" in item.value["source"]


def test_bound_node_refuses_a_run_for_another_user(cube: Any, store: MemOSStore) -> None:
    graph = _memory_graph(cube, store, user_id="alice")
    with pytest.raises(AccessDeniedError, match="cannot act for another"):
        graph.invoke({"messages": [HumanMessage("hi")]}, _thread("bob", "t"))
    assert graph.invoke({"messages": [HumanMessage("allergies?")]}, {"configurable": {"thread_id": "t2"}})["memories"]


def test_tools_take_the_user_from_context_and_cannot_forget_anothers(cube: Any, store: MemOSStore) -> None:
    builder = StateGraph(MessagesState, context_schema=UserCtx)
    builder.add_node("tools", ToolNode(make_memory_tools(store)))
    builder.add_edge(START, "tools")
    graph = builder.compile(store=store)

    def call(name: str, args: dict[str, Any], who: str) -> str:
        msg = AIMessage("", tool_calls=[{"name": name, "args": args, "id": "c1", "type": "tool_call"}])
        return str(graph.invoke({"messages": [msg]}, context={"user_id": who})["messages"][-1].content)

    assert "peanut butter" in call("search_memory", {"query": "peanut"}, "bob")
    assert "allergic" not in call("search_memory", {"query": "peanut"}, "bob")
    assert call("forget_memory", {"memory_id": "a1"}, "bob") == "no memory 'a1'"
    assert store.get(("users", "alice", "memories"), "a1") is not None
    assert call("search_memory", {"query": " "}, "alice")  # a blank query is not an error


def test_repro_replay_from_state_history_keeps_the_user(cube: Any, store: MemOSStore) -> None:
    """repro 10: configs from get_state_history lost the user_id, so replay failed in the recall node."""
    graph = _memory_graph(cube, store)
    config = _thread("alice", "t")
    graph.invoke({"messages": [HumanMessage("any food allergies?")]}, config)
    before_recall = next(s for s in graph.get_state_history(config) if s.next == ("recall",))
    assert before_recall.config["configurable"]["user_id"] == "alice"
    replayed = graph.invoke(None, before_recall.config)
    assert "alice is allergic to peanuts" in replayed["memories"]
