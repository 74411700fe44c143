"""Memory tools: bound to one user, refusing others, with provenance and no cross-user reads."""

from __future__ import annotations

import pytest

from memos_integrations import MemCube
from memos_integrations.errors import AccessDeniedError, InvalidTypeError
from memos_integrations.langchain import create_memory_tools


@pytest.fixture
def tools(cube: MemCube) -> dict[str, object]:
    cube.add(memory="Alice drinks genmaicha every morning.", user_id="alice")
    cube.add(memory="Bob drinks espresso.", user_id="bob")
    return {t.name: t for t in create_memory_tools(cube, "alice", agent_id="helper", session_id="s1")}


def test_search_returns_only_the_bound_users_memories_with_ids(tools: dict, cube: MemCube) -> None:
    content = tools["search_memory"].invoke({"query": "what does someone drink", "k": 5})
    assert "genmaicha" in content and "espresso" not in content
    message = tools["search_memory"].invoke(
        {"name": "search_memory", "args": {"query": "drink"}, "id": "c1", "type": "tool_call"}
    )
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


@pytest.mark.parametrize("name,args", [
    ("search_memory", {"query": "drink"}),
    ("save_memory", {"text": "Bob likes tea"}),
    ("forget_memory", {"memory_id": "x"}),
])
def test_a_user_the_tool_is_not_bound_to_is_refused_and_audited(tools: dict, cube: MemCube, name: str, args: dict) -> None:
    before = cube.stats()["items"]
    with pytest.raises(AccessDeniedError, match="bound to user 'alice' and cannot act for user 'bob'"):
        tools[name].invoke({**args, "user_id": "bob"})
    with pytest.raises(AccessDeniedError):
        tools[name].invoke(args, config={"configurable": {"user_id": "bob"}})
    assert cube.stats()["items"] == before
    denied = [row for row in cube.audit_log(10) if not row["allowed"]]
    assert denied[0]["action"] == f"tool:{name}" and denied[0]["target"] == "bob"
    tools[name].invoke({**args, "user_id": "alice"})  # naming the bound user is fine


def test_tools_need_a_user() -> None:
    with pytest.raises(InvalidTypeError, match="bound to one user"):
        create_memory_tools(object(), "")  # type: ignore[arg-type]


async def test_ainvoke_works(tools: dict) -> None:
    assert "genmaicha" in await tools["search_memory"].ainvoke({"query": "morning drink"})
