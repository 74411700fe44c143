"""Memory tools: who they act for (binding > run context > configurable), errors as tool errors, provenance."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from memos_integrations import MemCube
from memos_integrations.errors import InvalidTypeError
from memos_integrations.langchain import create_memory_tools


class ToolCallingFake(FakeMessagesListChatModel):
    """langchain-core's scripted fake chat model, made to accept tools (it replays the tool calls it is given)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def call(name: str, args: dict[str, Any], n: int = 1) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"c{n}"}])


def tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "args": args, "id": "c1", "type": "tool_call"}


@pytest.fixture
def tools(cube: MemCube) -> dict[str, Any]:
    cube.add(memory="Alice drinks genmaicha every morning.", user_id="alice")
    cube.add(memory="Bob drinks espresso.", user_id="bob")
    return {t.name: t for t in create_memory_tools(cube, "alice", agent_id="helper", session_id="s1")}


def test_search_returns_only_the_bound_users_memories_with_ids(tools: dict, cube: MemCube) -> None:
    content = tools["search_memory"].invoke({"query": "what does someone drink", "k": 5})
    assert "genmaicha" in content and "espresso" not in content
    message = tools["search_memory"].invoke(tool_call("search_memory", {"query": "drink"}))
    assert message.artifact[0]["text"] == "Alice drinks genmaicha every morning."
    assert f"[{message.artifact[0]['id']}]" in message.content


def test_save_records_provenance_and_forget_tombstones(tools: dict, cube: MemCube) -> None:
    reply = tools["save_memory"].invoke({"text": "Alice is allergic to peanuts", "kind": "fact"})
    item_id = reply.split()[-1].rstrip(".")
    item = cube.get(item_id)
    assert (item.user_id, item.agent_id, item.session_id) == ("alice", "helper", "s1")
    assert (item.created_by, item.method) == ("agent:helper", "tool:save_memory")
    assert tools["forget_memory"].invoke({"memory_id": item_id}) == f"Forgot memory {item_id}."
    assert cube.history(item_id)[-1].state.value == "deleted"
    assert "nothing was forgotten" in tools["forget_memory"].invoke({"memory_id": item_id})


def test_other_users_ids_read_as_absent(tools: dict, cube: MemCube) -> None:
    bob_id = cube.get_all(user_id="bob")[0].id
    assert "nothing was forgotten" in tools["forget_memory"].invoke({"memory_id": bob_id})
    assert cube.get(bob_id).text == "Bob drinks espresso."


def test_the_schema_offers_no_user_id_and_a_model_supplied_one_is_ignored(tools: dict, cube: MemCube) -> None:
    for tool in tools.values():
        assert "user_id" not in tool.tool_call_schema.model_json_schema()["properties"]
    content = tools["search_memory"].invoke({"query": "drink", "user_id": "bob"})
    assert "genmaicha" in content and "espresso" not in content


@pytest.mark.parametrize("name,args", [
    ("search_memory", {"query": "drink"}),
    ("save_memory", {"text": "Bob likes tea"}),
    ("forget_memory", {"memory_id": "x"}),
])
def test_a_run_for_another_user_is_a_tool_error_audited_and_silent_about_whom(
    tools: dict, cube: MemCube, name: str, args: dict
) -> None:
    before = cube.stats()["items"]
    for config in ({"configurable": {"user_id": "bob"}}, {"configurable": {"user_id": 7}}):
        message = tools[name].invoke(tool_call(name, args), config=config)
        assert isinstance(message, ToolMessage) and message.status == "error"
        assert "may not act for the user of this run" in message.content
        assert "alice" not in message.content and "bob" not in message.content
    assert cube.stats()["items"] == before
    denied = [row for row in cube.audit_log(10) if not row["allowed"]]
    assert denied[0]["action"] == "scope" and denied[0]["detail"]["asked"] == "7"
    assert denied[1]["detail"]["asked"] == "bob"
    assert tools[name].invoke(tool_call(name, args), config={"configurable": {"user_id": "alice"}}).status == "success"


@pytest.mark.parametrize("args,expected", [
    ({"text": "   "}, "empty or whitespace"),
    ({"text": "x" * 40_000}, "above this cube's limit"),
])
def test_a_refused_save_is_a_tool_error(tools: dict, cube: MemCube, args: dict, expected: str) -> None:
    message = tools["save_memory"].invoke(tool_call("save_memory", args))
    assert message.status == "error" and expected in message.content
    assert cube.stats()["items"] == 2


@pytest.mark.parametrize("query", ["   ", "genmaicha " * 4_000])
def test_a_blank_or_pasted_query_does_not_raise(tools: dict, query: str) -> None:
    message = tools["search_memory"].invoke(tool_call("search_memory", {"query": query}))
    assert message.status == "success"
    assert ("genmaicha" in message.content) == bool(query.strip())


def test_unbound_tools_act_for_the_runs_user_and_need_one(cube: MemCube) -> None:
    cube.add(memory="Bob drinks espresso.", user_id="bob")
    search, save, _ = create_memory_tools(cube)
    assert "espresso" in search.invoke({"query": "drink"}, config={"configurable": {"user_id": "bob"}})
    assert "No memories" in search.invoke({"query": "drink"}, config={"configurable": {"user_id": "alice"}})
    reply = save.invoke(tool_call("save_memory", {"text": "Bob likes jazz"}),
                        config={"configurable": {"user_id": "bob", "thread_id": "t3"}})
    item = cube.get(reply.content.split()[-1].rstrip("."))
    assert (item.user_id, item.session_id) == ("bob", "t3")
    assert "needs a user" in search.invoke(tool_call("search_memory", {"query": "drink"})).content


def test_errors_come_back_to_the_model_and_the_agent_run_goes_on(cube: MemCube) -> None:
    model = ToolCallingFake(responses=[
        call("save_memory", {"text": "  "}, 1),
        call("save_memory", {"text": "x" * 40_000}, 2),
        call("save_memory", {"text": "Alice likes oolong."}, 3),
        AIMessage("Saved the one that fit."),
    ])
    agent = create_agent(model, tools=create_memory_tools(cube, "alice"))
    out = agent.invoke({"messages": [HumanMessage("remember things")]})
    tool_messages = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in tool_messages] == ["error", "error", "success"]
    assert out["messages"][-1].content == "Saved the one that fit."
    assert [i.text for i in cube.get_all(user_id="alice")] == ["Alice likes oolong."]


def test_tools_need_a_cube() -> None:
    with pytest.raises(InvalidTypeError, match="needs a MemCube"):
        create_memory_tools(object(), "alice")  # type: ignore[arg-type]


@pytest.mark.parametrize("use_async", [False, True])
async def test_async_returns_what_sync_returns(tools: dict, use_async: bool) -> None:
    calls = [("search_memory", {"query": "morning drink"}), ("forget_memory", {"memory_id": "none"}),
             ("search_memory", {"query": "  "})]
    for name, args in calls:
        sync = tools[name].invoke(args)
        got = await tools[name].ainvoke(args) if use_async else tools[name].invoke(args)
        assert got == sync
