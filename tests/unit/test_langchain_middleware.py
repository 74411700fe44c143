"""MemOSMemoryMiddleware in real create_agent runs: recall within budget, remember with provenance, no leaks.

The chat model is ``StandInChatModel``, a deterministic stand-in (not an LLM) that records the
system prompt of every call.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from memos_integrations import MemCube
from memos_integrations.errors import AccessDeniedError, InvalidInputError
from memos_integrations.langchain import MemOSMemoryMiddleware, StandInChatModel, create_memory_tools

ALICE = ["Alice lives in Porto.", "Alice's cat is called Miso.", "Alice is allergic to peanuts."]
BOB = ["Bob lives in Oslo.", "Bob's dog is called Rex.", "Bob is allergic to shellfish."]


@pytest.fixture
def people(cube: MemCube) -> MemCube:
    cube.add(memory=ALICE, user_id="alice")
    cube.add(memory=BOB, user_id="bob")
    return cube


def ask(agent: Any, text: str, user: str | None, thread: str = "t1") -> dict[str, Any]:
    context = {"user_id": user} if user else None
    return agent.invoke({"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}}, context=context)  # type: ignore[no-any-return]


def test_recalls_the_users_memories_into_the_system_prompt_only(people: MemCube) -> None:
    model = StandInChatModel()
    agent = create_agent(model, system_prompt="Be brief.", middleware=[MemOSMemoryMiddleware(people)],
                         checkpointer=InMemorySaver())
    out = ask(agent, "Where do I live?", "alice")
    prompt = model.seen_system_prompts[-1]
    assert prompt.startswith("Be brief.\n\nRelevant long-term memories") and "- Alice lives in Porto." in prompt
    assert out["messages"][-1].content == "[stand-in model] From memory: Alice lives in Porto."
    assert [type(m) for m in out["messages"]] == [HumanMessage, AIMessage]  # nothing injected into state


def test_no_memory_of_one_user_reaches_another_users_run(people: MemCube) -> None:
    model = StandInChatModel()
    agent = create_agent(model, middleware=[MemOSMemoryMiddleware(people, k=20, max_tokens=4000)],
                         checkpointer=InMemorySaver())
    ask(agent, "Where does Alice live and what is her cat called?", "alice", thread="shared")
    ask(agent, "Where does Alice live and what is her cat called?", "bob", thread="shared")  # same thread!
    alice_prompt, bob_prompt = model.seen_system_prompts
    assert "Porto" in alice_prompt and "Oslo" not in alice_prompt
    assert "Oslo" in bob_prompt
    for text in [*ALICE, "Where does Alice live"]:  # not even Alice's turn that was just remembered
        assert text not in bob_prompt
    bob_items = people.get_all(user_id="bob")
    assert not any("Porto" in i.text or "From memory: Alice" in i.text for i in bob_items)


def test_token_budget_limits_what_is_injected(people: MemCube) -> None:
    model = StandInChatModel()
    tight = MemOSMemoryMiddleware(people, user_id="alice", k=10, max_tokens=30, remember=False)
    agent = create_agent(model, middleware=[tight])
    agent.invoke({"messages": [HumanMessage("Tell me about Alice")]})
    lines = [ln for ln in model.seen_system_prompts[-1].splitlines() if ln.startswith("- ")]
    assert 1 <= len(lines) < 3
    words = MemOSMemoryMiddleware(people, user_id="alice", max_tokens=1000, token_counter=lambda t: len(t.split()))
    recall = words.recall("alice", HumanMessage("allergies", id="h1"))
    assert len(recall["memory_ids"]) == 3 and recall["user_id"] == "alice"


def test_after_agent_reads_the_new_turn_with_provenance(people: MemCube) -> None:
    agent = create_agent(StandInChatModel(), middleware=[MemOSMemoryMiddleware(people, agent_id="helper")],
                         checkpointer=InMemorySaver())
    first = ask(agent, "I just started learning the cello.", "alice", thread="t9")
    second = ask(agent, "Which instrument am I learning?", "alice", thread="t9")
    turns = [i for i in people.get_all(user_id="alice") if "agent_turn" in i.tags]
    assert [i.text for i in turns][:2] == ["I just started learning the cello.", first["messages"][-1].content]
    assert len(turns) == 4  # two turns, each read once (the second run does not re-read the first)
    assert all(i.session_id == "t9" and i.agent_id == "helper" and i.created_by == "agent:helper" for i in turns)
    assert [i.sources for i in turns] == [[m.id] for m in second["messages"]]
    assert "cello" in second["messages"][-1].content  # recalled from the previous turn


def test_recall_is_searched_once_per_turn_not_per_tool_loop(people: MemCube, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    search = people.search

    def spy(query: str, **kw: Any) -> Any:
        calls.append(query)
        return search(query, **kw)

    middleware = MemOSMemoryMiddleware(people, user_id="alice")
    monkeypatch.setattr(people, "search", spy)
    human = HumanMessage("Where do I live?", id="h1")
    state: dict[str, Any] = {"messages": [human]}
    update = middleware.before_model(state, None)  # type: ignore[arg-type]
    state.update(update or {})
    state["messages"] += [AIMessage("", tool_calls=[{"name": "x", "args": {}, "id": "1"}])]
    assert middleware.before_model(state, None) is None  # type: ignore[arg-type]
    assert calls == ["Where do I live?"]


def test_a_run_needs_its_user_and_a_bound_middleware_refuses_others(people: MemCube) -> None:
    agent = create_agent(StandInChatModel(), middleware=[MemOSMemoryMiddleware(people)])
    with pytest.raises(InvalidInputError, match="no user for this run"):
        agent.invoke({"messages": [HumanMessage("hi")]})
    bound = create_agent(StandInChatModel(), middleware=[MemOSMemoryMiddleware(people, user_id="alice")])
    with pytest.raises(AccessDeniedError, match="bound to user_id 'alice'"):
        bound.invoke({"messages": [HumanMessage("hi")]}, context={"user_id": "bob"})
    with pytest.raises(InvalidInputError):
        MemOSMemoryMiddleware(people, max_tokens=0)


def test_works_beside_the_memory_tools(people: MemCube) -> None:
    agent = create_agent(StandInChatModel(), tools=create_memory_tools(people, "alice"),
                         middleware=[MemOSMemoryMiddleware(people, user_id="alice")])
    out = agent.invoke({"messages": [HumanMessage("What is my cat called?")]})
    assert "Miso" in out["messages"][-1].content


async def test_async_agent_runs_cube_work_off_the_event_loop(people: MemCube, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    search, add = people.search, people.add

    def spy_search(*a: Any, **kw: Any) -> Any:
        threads.append(threading.get_ident())
        return search(*a, **kw)

    def spy_add(*a: Any, **kw: Any) -> Any:
        threads.append(threading.get_ident())
        return add(*a, **kw)

    monkeypatch.setattr(people, "search", spy_search)
    monkeypatch.setattr(people, "add", spy_add)
    agent = create_agent(StandInChatModel(), middleware=[MemOSMemoryMiddleware(people)])
    out = await agent.ainvoke({"messages": [HumanMessage("Where do I live?")]}, context={"user_id": "bob"})
    assert "Oslo" in out["messages"][-1].content
    assert len(threads) == 2 and threading.get_ident() not in threads


def test_a_pasted_message_longer_than_the_cube_takes_does_not_end_the_run(people: MemCube) -> None:
    model = StandInChatModel()
    agent = create_agent(model, middleware=[MemOSMemoryMiddleware(people)], checkpointer=InMemorySaver())
    pasted = "Where does Alice live? " + "stack trace line\n" * 2_200  # about 37,000 characters
    out = ask(agent, pasted, "alice", thread="paste")
    assert "Porto" in model.seen_system_prompts[-1]  # the cube searched a reduction of the pasted message
    turns = [i.text for i in people.get_all(user_id="alice", kinds=["message"]) if "agent_turn" in i.tags]
    assert sorted((t.strip() for t in turns), key=len) == [out["messages"][-1].content, pasted.strip()]  # both whole
    assert ask(agent, "   ", "alice", thread="blank")["messages"][-1].content.startswith("[stand-in model]")


def test_the_run_context_may_name_its_user_under_another_key(people: MemCube) -> None:
    model = StandInChatModel()
    agent = create_agent(model, middleware=[MemOSMemoryMiddleware(people, user_key="customer", remember=False)])
    agent.invoke({"messages": [HumanMessage("Where do I live?")]}, context={"customer": "bob"})
    assert "Oslo" in model.seen_system_prompts[-1] and "Porto" not in model.seen_system_prompts[-1]


@pytest.mark.parametrize("use_async", [False, True])
async def test_async_runs_return_what_sync_runs_return(people: MemCube, use_async: bool) -> None:
    def agent(model: StandInChatModel) -> Any:
        return create_agent(model, middleware=[MemOSMemoryMiddleware(people, remember=False)])

    sync_model, model = StandInChatModel(), StandInChatModel()
    request = {"messages": [HumanMessage("Where do I live?", id="h1")]}
    expected = agent(sync_model).invoke(request, context={"user_id": "bob"})
    runner = agent(model)
    got = await runner.ainvoke(request, context={"user_id": "bob"}) if use_async else runner.invoke(
        request, context={"user_id": "bob"})
    assert got["messages"][-1].content == expected["messages"][-1].content
    assert model.seen_system_prompts == sync_model.seen_system_prompts
