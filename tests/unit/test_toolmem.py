"""Tool memory: recording (capped, redacted, per user), distillation (extractive, with provenance), and the
scripted agent that repeats a mistake until its tool memory stops it, in both faces, sync and async.

The chat model is ``ScriptedToolModel`` below: a script, not a language model. Asked about order N, it
calls ``lookup_order(order_id="#N")`` (the mistake: the tool wants digits); after an error it retries with
``"N"``; after a result it answers. It reads its input like a model would: when its system message
carries the lesson "avoid calling it with order_id like '#9'" it calls with ``"N"`` at once.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool, ToolException, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

from memos_integrations import MemCube
from memos_integrations.errors import AccessDeniedError, InvalidInputError, ItemNotFoundError
from memos_integrations.langchain import MemOSToolMemoryMiddleware
from memos_integrations.langgraph import MemOSToolNode, ToolMemoryPrompt
from memos_integrations.toolmem import TAG, ToolMemory, distil, safe_args
from memos_integrations.toolmem.record import ToolCall

LESSON = "avoid calling it with order_id like '#9'"


class ScriptedToolModel(BaseChatModel):
    seen_system: list[str] = []
    calls: list[dict[str, Any]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-model"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        system = "\n".join(m.text for m in messages if isinstance(m, SystemMessage))
        self.seen_system.append(system)
        human = next(m for m in reversed(messages) if isinstance(m, HumanMessage))
        number = re.search(r"\d+", human.text)
        n = number.group(0) if number else "0"
        last = messages[-1]
        if isinstance(last, ToolMessage) and last.status != "error":
            reply = AIMessage(content=f"Order {n}: {last.text}")
        else:
            retry = isinstance(last, ToolMessage)  # an error came back: the model fixes its argument
            arg = n if (retry or LESSON in system) else f"#{n}"
            call = {"name": "lookup_order", "args": {"order_id": arg}, "id": f"call{len(self.calls)}", "type": "tool_call"}
            self.calls.append(call)
            reply = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        return self  # type: ignore[return-value]


@tool
def lookup_order(order_id: str) -> str:
    """Find an order by its id (digits only)."""
    if not order_id.isdigit():
        raise ToolException(f"OrderIdError: order id must be digits, got {order_id!r}")
    return f"order {order_id} shipped"


lookup_order.handle_tool_error = True


@tool
def broken(query: str) -> str:
    """A tool that always raises (a bug in the tool, not a bad argument)."""
    raise ValueError(f"backend down for {query!r}")



def ask_agent(agent: Any, text: str, user: str, thread: str) -> dict[str, Any]:
    return agent.invoke({"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}},  # type: ignore[no-any-return]
                        context={"user_id": user})


def langchain_agent(memory: ToolMemory, model: ScriptedToolModel, **kw: Any) -> Any:
    return create_agent(model, tools=[lookup_order], middleware=[MemOSToolMemoryMiddleware(memory, **kw)])


def langgraph_agent(memory: ToolMemory, model: ScriptedToolModel) -> Any:
    prompt = ToolMemoryPrompt(memory, [lookup_order])

    def call_model(state: MessagesState, config: Any) -> dict[str, Any]:
        return {"messages": [model.invoke(prompt(state, config))]}

    async def acall_model(state: MessagesState, config: Any) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(await prompt.ainvoke(state, config))]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", RunnableLambda(call_model, afunc=acall_model))
    builder.add_node("tools", MemOSToolNode([lookup_order], memory))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition, ["tools", END])
    builder.add_edge("tools", "model")
    return builder.compile()


def ask_graph(graph: Any, text: str, user: str, thread: str) -> dict[str, Any]:
    return graph.invoke({"messages": [HumanMessage(text)]},  # type: ignore[no-any-return]
                        {"configurable": {"thread_id": thread, "user_id": user}})


def tool_calls_of(out: dict[str, Any]) -> list[dict[str, Any]]:
    return [c["args"] for m in out["messages"] if isinstance(m, AIMessage) for c in m.tool_calls]


# -- the scripted agent that repeats a mistake until its tool memory stops it ----------------------------
@pytest.mark.parametrize("face", ["langchain", "langgraph"])
def test_the_agent_stops_repeating_its_mistake_once_tool_memory_has_the_lesson(cube: MemCube, face: str) -> None:
    memory = ToolMemory(cube, min_failures=2)  # a lesson needs two failures of the same pattern
    model = ScriptedToolModel(seen_system=[], calls=[])
    agent = langchain_agent(memory, model) if face == "langchain" else langgraph_agent(memory, model)
    ask = ask_agent if face == "langchain" else ask_graph

    first = ask(agent, "Where is order 123?", "maya", "t1")
    assert tool_calls_of(first) == [{"order_id": "#123"}, {"order_id": "123"}]  # the mistake, then a retry
    start = len(model.seen_system)
    second = ask(agent, "Where is order 456?", "maya", "t2")
    assert tool_calls_of(second) == [{"order_id": "#456"}, {"order_id": "456"}]  # one failure is no lesson yet
    assert LESSON not in model.seen_system[start]

    third = ask(agent, "Where is order 789?", "maya", "t3")
    assert tool_calls_of(third) == [{"order_id": "789"}]  # read the lesson before the call: no mistake
    assert third["messages"][-1].content == "Order 789: order 789 shipped"
    before_call = model.seen_system[-2]  # the system message of the model call that chose the tool call
    assert LESSON in before_call
    assert "lookup_order [2 of 4 calls succeeded, 50%]" in before_call  # success rates shown
    assert "2 of 2 such calls failed (OrderIdError: order id must be digits" in before_call
    assert "Instead use order_id='456' (worked in 2 of 2 retries)" in before_call
    assert not any(isinstance(m, ToolMessage) and "Tool memory" in m.text for m in third["messages"])

    calls = memory.calls("maya")
    assert [(c.args["order_id"], c.ok) for c in calls] == [
        ("#123", False), ("123", True), ("#456", False), ("456", True), ("789", True)]
    assert {c.session_id for c in calls} == {"t1", "t2", "t3"}
    assert all(c.latency_ms >= 0 and c.call_id for c in calls)
    [lesson] = memory.experiences("maya", ["lookup_order"])
    assert lesson.kind.value == "fact" and TAG in lesson.tags and "tool:lookup_order" in lesson.tags
    by_id = {c.id: c for c in calls}
    assert {by_id[s].args["order_id"] for s in lesson.sources} == {"#123", "123", "#456", "456"}  # provenance
    assert lesson.metadata["failed"] == 2 and lesson.metadata["success_rate"] == 0.0


@pytest.mark.parametrize("face", ["langchain", "langgraph"])
def test_async_runs_record_and_surface_what_sync_runs_do(make_cube: Any, face: str) -> None:
    results = []
    for mode in ("sync", "async"):
        memory = ToolMemory(make_cube(f"{face}-{mode}"), min_failures=2)
        model = ScriptedToolModel(seen_system=[], calls=[])
        agent = langchain_agent(memory, model) if face == "langchain" else langgraph_agent(memory, model)
        for n, text in enumerate(["Where is order 1?", "Where is order 2?", "Where is order 3?"]):
            messages = {"messages": [HumanMessage(text)]}
            if face == "langchain":
                config, kw = {"configurable": {"thread_id": f"t{n}"}}, {"context": {"user_id": "maya"}}
            else:
                config, kw = {"configurable": {"thread_id": f"t{n}", "user_id": "maya"}}, {}
            if mode == "sync":
                agent.invoke(messages, config, **kw)
            else:
                asyncio.run(agent.ainvoke(messages, config, **kw))
        calls = [(c.tool, c.args, c.ok, c.error_class, c.session_id) for c in memory.calls("maya")]
        results.append((calls, memory.render("maya", ["lookup_order"]), model.calls))
    assert results[0] == results[1]
    assert LESSON in results[0][1]


def test_async_methods_return_what_the_sync_ones_do(cube: MemCube) -> None:
    memory = ToolMemory(cube)
    memory.record("maya", "lookup_order", {"order_id": "#1"}, ok=False, error="bad", error_class="OrderIdError")
    call = asyncio.run(memory.arecord("maya", "lookup_order", {"order_id": "1"}, ok=True, session_id=None))
    assert call.ok and call.args == {"order_id": "1"}

    async def both() -> tuple[Any, ...]:
        return (await memory.acalls("maya"), await memory.astats("maya"), await memory.aexperiences("maya"),
                await memory.arender("maya", ["lookup_order"]), await memory.adistil("maya"))

    assert asyncio.run(both()) == (memory.calls("maya"), memory.stats("maya"), memory.experiences("maya"),
                                   memory.render("maya", ["lookup_order"]), memory.distil("maya"))


# -- scope ---------------------------------------------------------------------------------------------
def test_one_users_tool_memory_never_reaches_another_users_run(cube: MemCube) -> None:
    memory = ToolMemory(cube)
    model = ScriptedToolModel(seen_system=[], calls=[])
    agent = langchain_agent(memory, model)
    ask_agent(agent, "Where is order 123?", "maya", "shared")
    assert LESSON in memory.render("maya", ["lookup_order"])
    seen = len(model.seen_system)
    out = ask_agent(agent, "Where is order 77?", "bob", "shared")  # same thread, another user
    assert "Tool memory" not in model.seen_system[seen]  # bob's first call: nothing of maya's
    assert all("123" not in s for s in model.seen_system[seen:])  # later ones: only bob's own failure
    assert tool_calls_of(out)[0] == {"order_id": "#77"}  # bob's agent has no lesson: it makes the mistake
    assert [c.user_id for c in memory.calls("bob")] == ["bob", "bob"]
    assert all(c.user_id == "maya" for c in memory.calls("maya"))
    assert all(i.user_id == "maya" for i in memory.experiences("maya"))
    assert all(i.user_id == "bob" for i in memory.experiences("bob"))
    assert memory.forget("bob") == 2 and memory.calls("bob") == [] and memory.experiences("bob") == []
    assert len(memory.calls("maya")) == 2 and memory.experiences("maya")


def test_a_bound_middleware_refuses_another_users_run_before_any_tool_runs(cube: MemCube) -> None:
    memory = ToolMemory(cube)
    agent = langchain_agent(memory, ScriptedToolModel(seen_system=[], calls=[]), user_id="maya")
    with pytest.raises(AccessDeniedError):
        ask_agent(agent, "Where is order 1?", "bob", "t")
    assert memory.calls("bob") == [] and memory.calls("maya") == []
    assert any(e["action"] == "scope" and not e["allowed"] for e in cube.audit_log())


def test_a_run_without_a_user_is_refused(cube: MemCube) -> None:
    graph = langgraph_agent(ToolMemory(cube), ScriptedToolModel(seen_system=[], calls=[]))
    with pytest.raises(InvalidInputError, match="needs a user"):
        graph.invoke({"messages": [HumanMessage("Where is order 1?")]}, {"configurable": {"thread_id": "t"}})
    with pytest.raises(InvalidInputError):
        ToolMemory(cube).calls("")


# -- bad input -----------------------------------------------------------------------------------------
def test_huge_garbage_and_secret_arguments_are_capped_and_redacted(cube: MemCube) -> None:
    memory = ToolMemory(cube, max_arg_chars=500)
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(200):
        inner["deeper"] = {}
        inner = inner["deeper"]
    args = {"q": "x" * 1_000_000, "nested": nested, "blob": b"\x00\xff" * 1000, "obj": object(),
            "nan": float("nan"), "many": list(range(100_000)), "password": "hunter2",
            "headers": {"Authorization": "Bearer sk-secret-1"}, 7: "int key"}
    call = memory.record("maya", "search", args, ok=True, output="y" * 10_000, call_id="c" * 5000)
    stored = memory.calls("maya")[0]
    assert stored == call
    text = json.dumps(stored.args)
    assert len(text) <= 500 and "hunter2" not in text and "sk-secret-1" not in text
    assert len(stored.output or "") <= 203 and len(stored.call_id or "") <= 203
    full = safe_args(args)  # under the default cap: secrets redacted, bytes described, depth bounded
    assert full["password"] == "[redacted]" and full["headers"]["Authorization"] == "[redacted]"
    assert full["blob"] == "<bytes of 2000 bytes>" and full["nan"] == "nan" and full["7"] == "int key"
    assert "<nested too deep>" in json.dumps(full) and len(json.dumps(full)) <= 2000
    assert safe_args("just a string") == {"input": "just a string"}
    raw = b"".join(p.read_bytes() for p in cube.path.glob("memory.db*"))
    assert b"hunter2" not in raw and b"sk-secret-1" not in raw
    with pytest.raises(InvalidInputError):
        memory.record("maya", "", {}, ok=True)
    with pytest.raises(InvalidInputError):
        ToolMemory(cube, max_arg_chars=0)


def test_a_tool_that_raises_is_recorded_and_the_error_still_raises(cube: MemCube) -> None:
    memory = ToolMemory(cube)
    builder = StateGraph(MessagesState)
    builder.add_node("tools", MemOSToolNode([broken], memory, handle_tool_errors=False))
    builder.add_edge(START, "tools")
    graph = builder.compile()
    call = AIMessage(content="", tool_calls=[{"name": "broken", "args": {"query": "q1"}, "id": "c1", "type": "tool_call"}])
    with pytest.raises(ValueError, match="backend down"):
        graph.invoke({"messages": [call]}, {"configurable": {"user_id": "maya"}})
    [failed] = memory.calls("maya")
    assert (failed.ok, failed.error_class, failed.args) == (False, "ValueError", {"query": "q1"})
    assert "backend down" in (failed.error or "")
    # the framework's error handling on: an error ToolMessage, recorded with the class it names
    builder = StateGraph(MessagesState)
    builder.add_node("tools", MemOSToolNode([broken], memory, handle_tool_errors=True))
    builder.add_edge(START, "tools")
    out = builder.compile().invoke({"messages": [call]}, {"configurable": {"user_id": "maya"}})
    assert out["messages"][-1].status == "error"
    assert [(c.ok, c.error_class) for c in memory.calls("maya")] == [(False, "ValueError"), (False, "ValueError")]
    assert ("- broken [0 of 2 calls succeeded, 0%]: avoid calling it with query like 'a9' (e.g. query='q1'): "
            "2 of 2 such calls failed (ValueError: backend down for 'q1').") in memory.render("maya", ["broken"])
    with pytest.raises(InvalidInputError):
        MemOSToolNode([broken], memory, wrap_tool_call=lambda r, h: h(r))


# -- distillation --------------------------------------------------------------------------------------
def _call(n: int, args: dict[str, Any], ok: bool, session: str = "s", error_class: str = "NotFound") -> ToolCall:
    return ToolCall(id=f"c{n}", user_id="u", tool="weather", args=args, ok=ok, latency_ms=1.0, created_at=float(n),
                    session_id=session, error_class=None if ok else error_class, error=None if ok else "no such city")


def test_distil_groups_failures_by_literal_arguments_when_the_shape_cannot_tell() -> None:
    calls = [_call(1, {"city": "Pariss"}, False), _call(2, {"city": "Paris"}, True),
             _call(3, {"city": "Pariss"}, False, "s2"), _call(4, {"city": "Paris"}, True, "s2"),
             _call(5, {"city": "Oslo"}, True, "s3")]
    [exp] = distil(calls)
    assert exp.pattern == "city='Pariss'" and (exp.failed, exp.like) == (2, 2)
    assert exp.instead == {"city": "Paris"} and (exp.fixed, exp.retried) == (2, 2)
    assert exp.sources == ("c1", "c3", "c2", "c4") and (exp.tool_calls, exp.tool_ok) == (5, 3)
    assert exp.text() == ("weather: avoid calling it with city='Pariss': 2 of 2 such calls failed (NotFound: no such city). "
                          "Instead use city='Paris' (worked in 2 of 2 retries).")
    assert distil(calls) == distil(list(calls))  # deterministic
    with_secret = [replace(c, args={**c.args, "token": "[redacted]"}) if not c.ok else c for c in calls]
    assert [(e.pattern, e.instead) for e in distil(with_secret)] == [("city='Pariss'", {"city": "Paris"})]
    assert distil(calls, min_failures=3) == []
    assert distil([_call(1, {"city": "Oslo"}, True)]) == []


def test_experiences_are_updated_in_place_and_dropped_when_their_calls_are_gone(cube: MemCube) -> None:
    written: list[str] = []

    def writer(exp: Any, calls: Any) -> str:
        written.append(exp.key)
        return f"LLM wording for {exp.tool} from {len(calls)} calls"

    memory = ToolMemory(cube, writer=writer)
    memory.record("maya", "lookup_order", {"order_id": "#1"}, ok=False, error="digits only", error_class="OrderIdError")
    [first] = memory.experiences("maya")
    assert first.text == "LLM wording for lookup_order from 1 calls" and first.sources == [memory.calls("maya")[0].id]
    memory.record("maya", "lookup_order", {"order_id": "1"}, ok=True)  # the fix: same pattern, a new version
    [second] = memory.experiences("maya")
    assert second.id == first.id and second.version == 2 and second.text.endswith("from 2 calls")
    assert second.metadata["instead"] == {"order_id": "1"} and len(written) == 2
    assert memory.distil("maya") == [second]  # nothing changed: no new version
    # a pattern that stops holding (the shape 'a' also succeeds) is replaced by the literal one
    memory.record("maya", "weather", {"city": "Pariss"}, ok=False, error="no such city", error_class="NotFound")
    [by_shape] = memory.experiences("maya", ["weather"])
    memory.record("maya", "weather", {"city": "Paris"}, ok=True)
    [by_value] = memory.experiences("maya", ["weather"])
    assert by_value.id != by_shape.id and by_value.metadata["like"] == 1
    with pytest.raises(ItemNotFoundError):
        cube.get(by_shape.id)
    memory.table.forget("maya")  # the calls are gone: so are the lessons read from them
    assert memory.distil("maya") == [] and memory.experiences("maya") == []


def test_parallel_failing_calls_make_one_lesson_and_a_fix_after_a_restart_still_counts(cube: MemCube) -> None:
    memory = ToolMemory(cube)
    builder = StateGraph(MessagesState)
    builder.add_node("tools", MemOSToolNode([lookup_order], memory))
    builder.add_edge(START, "tools")
    graph = builder.compile()
    calls = [{"name": "lookup_order", "args": {"order_id": f"#{n}"}, "id": f"c{n}", "type": "tool_call"} for n in range(4)]
    out = graph.invoke({"messages": [AIMessage(content="", tool_calls=calls)]},  # ToolNode runs them in threads
                       {"configurable": {"user_id": "maya", "thread_id": "t"}})
    assert [m.status for m in out["messages"][1:]] == ["error"] * 4
    [lesson] = ToolMemory(cube).experiences("maya")
    assert lesson.metadata["failed"] == 4 and lesson.metadata["instead"] is None
    reopened = ToolMemory(cube)  # a new process: what failed before is read from the table, not kept in memory
    reopened.record("maya", "lookup_order", {"order_id": "3"}, ok=True, session_id="t")
    [fixed] = reopened.experiences("maya")
    assert fixed.id == lesson.id and fixed.metadata["instead"] == {"order_id": "3"}
    # a duplicate of one lesson (two processes distilling at once) is folded into one on the next distil
    cube.add(memory="copy", user_id="maya", tags=[TAG, "tool:lookup_order"], metadata=dict(fixed.metadata))
    assert len(reopened.experiences("maya")) == 2
    assert [i.id for i in reopened.distil("maya")] == [fixed.id] and len(reopened.experiences("maya")) == 1


def test_through_a_mos_view_a_read_share_records_nothing(tmp_path: Any, embedder: Any) -> None:
    from memos_integrations import MOS
    from memos_integrations.face_api import as_cube

    mos = MOS(tmp_path / "home", embedder=embedder)
    try:
        for user in ("alice", "bob"):
            mos.create_user(user)
        cube_id = mos.create_cube_for_user("alice_tools", owner_id="alice")
        mine = ToolMemory(as_cube(mos.cube(cube_id, user_id="alice", access="write"), "test"))
        mine.record("alice", "lookup_order", {"order_id": "#1"}, ok=False, error="digits", error_class="OrderIdError")
        assert mine.experiences("alice")
        mos.share_cube_with_user(cube_id, "bob", "read", user_id="alice")
        theirs = ToolMemory(as_cube(mos.cube(cube_id, user_id="bob"), "test"))
        with pytest.raises(AccessDeniedError):
            theirs.record("bob", "lookup_order", {"order_id": "1"}, ok=True)
        assert theirs.calls("bob") == [] and len(mine.calls("alice")) == 1
    finally:
        mos.close()
