"""Two users (maya, bob) and two agents (scout, helper) on one cube: no LangChain path crosses a scope.

Every read, write, delete, list and search path of every LangChain class, called for one user, must
neither return nor change what belongs to another. Who is acting is resolved in one order (the
binding, the run's context, ``configurable``; :func:`memos_integrations.access.resolve_scope`), so each
class is driven both ways: bound, and unbound inside a run that names its user. The reproductions of
the scope bugs found on main are here too (tool binding vs the run's context, the vector store reading
every kind, an unscoped store taking over a scoped id).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from memos_integrations import MemCube
from memos_integrations.errors import AccessDeniedError, InvalidInputError
from memos_integrations.langchain import (
    MemOSChatMessageHistory,
    MemOSMemoryMiddleware,
    MemOSRetriever,
    MemOSVectorStore,
    StandInChatModel,
    create_memory_tools,
)

MAYA = ["Maya's bank PIN is 4321.", "Maya's sister lives in Lisbon."]
BOB = ["Bob's bank PIN is 9876.", "Bob's brother lives in Oslo."]


class ToolCallingFake(FakeMessagesListChatModel):
    """langchain-core's scripted fake chat model, made to accept tools (it replays the tool calls it is given)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def calls(*steps: tuple[str, dict[str, Any]]) -> list[AIMessage]:
    out = [AIMessage("", tool_calls=[{"name": n, "args": a, "id": f"c{i}"}]) for i, (n, a) in enumerate(steps)]
    return [*out, AIMessage("done")]


class _Empty(TypedDict, total=False):
    x: int


def in_run(user: str, work: Any, *, via: str = "context") -> Any:
    """Call ``work()`` inside a run whose user is named in its context (a LangGraph run, as create_agent
    makes) or in ``configurable`` (any LangChain runnable)."""
    if via == "configurable":
        return RunnableLambda(lambda _: work()).invoke(None, config={"configurable": {"user_id": user}})
    seen: list[Any] = []
    graph = StateGraph(_Empty, context_schema=dict)
    graph.add_node("work", lambda _: seen.append(work()))
    graph.add_edge(START, "work")
    graph.compile().invoke({"x": 1}, context={"user_id": user})
    return seen[0]


@pytest.fixture
def people(cube: MemCube) -> MemCube:
    cube.add(memory=MAYA, user_id="maya", agent_id="scout")
    cube.add(memory=BOB, user_id="bob", agent_id="helper")
    cube.add(messages=[{"role": "user", "content": "Maya: my PIN is secret."}], user_id="maya")
    return cube


def users_of(docs: list[Document]) -> set[Any]:
    return {d.metadata.get("user_id") for d in docs}


# -- the reproductions --------------------------------------------------------------------------------

def test_readme_composition_tools_bound_to_maya_in_bobs_run_leak_nothing(people: MemCube) -> None:
    """create_memory_tools(cube, "maya") + MemOSMemoryMiddleware(cube) + context={"user_id": "bob"}."""
    model = ToolCallingFake(responses=calls(("search_memory", {"query": "bank PIN"}),
                                            ("save_memory", {"text": "Bob likes jazz."}),
                                            ("forget_memory", {"memory_id": people.get_all(user_id="maya")[0].id})))
    agent = create_agent(model, tools=create_memory_tools(people, "maya"), middleware=[MemOSMemoryMiddleware(people)])
    out = agent.invoke({"messages": [HumanMessage("What is my PIN?")]}, context={"user_id": "bob"})
    results = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in results] == ["error", "error", "error"]  # refused, and the run went on
    assert not any("4321" in str(m.content) or "maya" in str(m.content) for m in out["messages"])
    assert out["messages"][-1].content == "done"
    assert [i.text for i in people.get_all(user_id="maya")][:2] == MAYA  # nothing saved under maya, nothing forgotten
    assert not any("jazz" in i.text for i in people.get_all())
    assert [r["detail"]["asked"] for r in people.audit_log(20) if r["action"] == "scope"] == ["bob"] * 3


def test_unbound_tools_and_middleware_serve_each_run_its_own_user(people: MemCube) -> None:
    for user, mine, theirs in (("bob", "9876", "4321"), ("maya", "4321", "9876")):
        model = ToolCallingFake(responses=calls(("search_memory", {"query": "bank PIN"}),
                                                ("save_memory", {"text": f"{user} likes jazz."})))
        agent = create_agent(model, tools=create_memory_tools(people), middleware=[MemOSMemoryMiddleware(people)],
                             checkpointer=InMemorySaver())
        out = agent.invoke({"messages": [HumanMessage("What is my bank PIN?")]},
                           {"configurable": {"thread_id": "same-thread"}}, context={"user_id": user})
        found = next(m for m in out["messages"] if isinstance(m, ToolMessage)).content
        assert mine in found and theirs not in found
        assert [i.user_id for i in people.get_all() if "jazz" in i.text][-1] == user


def test_vector_store_reads_only_documents_of_its_scope(people: MemCube) -> None:
    maya = MemOSVectorStore(people, user_id="maya")
    maya.add_texts(["Maya's tea notes."], ids=["maya-doc"])
    assert [d.id for d in maya.similarity_search("bank PIN", k=10)] == ["maya-doc"]  # no chat messages, no facts
    memory_ids = [i.id for i in people.get_all(user_id="maya") if i.id != "maya-doc"]
    assert maya.get_by_ids(memory_ids) == [] and maya.delete(memory_ids) is False
    assert len(people.get_all(user_id="maya")) == 4


def test_unscoped_vector_store_cannot_move_a_document_out_of_its_users_scope(people: MemCube) -> None:
    MemOSVectorStore(people, user_id="maya").add_texts(["Maya's tea notes."], ids=["maya-doc"])
    with pytest.raises(AccessDeniedError):
        MemOSVectorStore(people).add_texts(["overwritten"], ids=["maya-doc"])
    assert [v.user_id for v in people.history("maya-doc")] == ["maya"]
    assert [d.id for d in MemOSVectorStore(people, user_id="maya").similarity_search("tea", k=1)] == ["maya-doc"]


# -- every class, every path ---------------------------------------------------------------------------

def test_vector_store_paths(people: MemCube) -> None:
    maya, bob = MemOSVectorStore(people, user_id="maya"), MemOSVectorStore(people, user_id="bob")
    maya.add_documents([Document("Maya's garden has roses.", id="m1")])
    bob.add_documents([Document("Bob's garden has tulips.", id="b1")])
    for store, mine, theirs in ((maya, "m1", "b1"), (bob, "b1", "m1")):
        assert [d.id for d in store.similarity_search("garden flowers", k=10)] == [mine]
        assert [d.id for d, _ in store.similarity_search_with_relevance_scores("garden", k=10)] == [mine]
        assert [d.id for d in store.max_marginal_relevance_search("garden", k=5)] == [mine]
        assert [d.id for d in store.as_retriever().invoke("garden")] == [mine]
        assert store.get_by_ids([mine, theirs])[0].id == mine and len(store.get_by_ids([mine, theirs])) == 1
        assert store.delete([theirs]) is False
        with pytest.raises(AccessDeniedError):
            store.add_texts(["overwrite"], ids=[theirs])
    assert people.get("m1").text == "Maya's garden has roses." and people.get("b1").text == "Bob's garden has tulips."


@pytest.mark.parametrize("via", ["context", "configurable"])
def test_an_unbound_vector_store_acts_for_the_runs_user(people: MemCube, via: str) -> None:
    store = MemOSVectorStore(people)
    in_run("maya", lambda: store.add_texts(["Maya's roses."], ids=["m1"]), via=via)
    in_run("bob", lambda: store.add_texts(["Bob's tulips."], ids=["b1"]), via=via)
    assert (people.get("m1").user_id, people.get("b1").user_id) == ("maya", "bob")
    assert [d.id for d in in_run("bob", lambda: store.similarity_search("garden", k=10), via=via)] == ["b1"]
    assert in_run("bob", lambda: store.get_by_ids(["m1"]), via=via) == []
    assert in_run("bob", lambda: store.delete(["m1"]), via=via) is False
    with pytest.raises(AccessDeniedError):
        in_run("bob", lambda: store.add_texts(["mine now"], ids=["m1"]), via=via)
    with pytest.raises(AccessDeniedError):  # a store bound to maya is refused in bob's run
        in_run("bob", lambda: MemOSVectorStore(people, user_id="maya").similarity_search("garden"), via=via)


def test_vector_stores_of_two_agents_of_one_user_stay_apart(people: MemCube) -> None:
    scout = MemOSVectorStore(people, user_id="maya", agent_id="scout")
    helper = MemOSVectorStore(people, user_id="maya", agent_id="helper")
    scout.add_texts(["scout's field notes"], ids=["s1"])
    helper.add_texts(["helper's field notes"], ids=["h1"])
    assert [d.id for d in scout.similarity_search("field notes", k=5)] == ["s1"]
    assert helper.get_by_ids(["s1"]) == [] and helper.delete(["s1"]) is False
    with pytest.raises(AccessDeniedError):
        helper.add_texts(["taken"], ids=["s1"])
    with pytest.raises(AccessDeniedError):  # a run for another agent than the store's binding
        RunnableLambda(lambda _: scout.similarity_search("notes")).invoke(
            None, config={"configurable": {"user_id": "maya", "agent_id": "helper"}})


@pytest.mark.parametrize("via", ["context", "configurable"])
def test_retriever_paths(people: MemCube, via: str) -> None:
    assert users_of(MemOSRetriever(cube=people, user_id="bob", k=20).invoke("bank PIN sister brother")) == {"bob"}
    unbound = MemOSRetriever(cube=people, user_id=None, k=20)
    assert users_of(in_run("maya", lambda: unbound.invoke("bank PIN"), via=via)) == {"maya"}
    assert users_of(unbound.invoke("bank PIN", user_id="bob")) == {"bob"}
    with pytest.raises(AccessDeniedError):
        in_run("bob", lambda: MemOSRetriever(cube=people, user_id="maya").invoke("PIN"), via=via)
    with pytest.raises(AccessDeniedError):
        MemOSRetriever(cube=people, user_id="maya").invoke("PIN", user_id="bob")


@pytest.mark.parametrize("via", ["context", "configurable"])
def test_chat_history_paths(people: MemCube, via: str) -> None:
    MemOSChatMessageHistory(people, "maya-s", user_id="maya", remember=True).add_user_message("Maya's secret words.")
    bob = MemOSChatMessageHistory(people, "maya-s", user_id="bob", remember=True)
    assert bob.messages == []  # sessions are per user: bob's "maya-s" is his own, as a fresh one
    bob.add_user_message("bob was here")
    assert [m.content for m in bob.messages] == ["bob was here"]
    bob.clear()  # his messages only
    unbound = MemOSChatMessageHistory(people, "maya-s", remember=True)
    assert in_run("bob", lambda: unbound.messages, via=via) == []  # unbound, in bob's run, it is bob's history
    assert [m.content for m in in_run("maya", lambda: unbound.messages, via=via)] == ["Maya's secret words."]
    in_run("bob", lambda: MemOSChatMessageHistory(people, "bob-s", remember=True).add_user_message("Bob's words."),
           via=via)
    assert {i.user_id for i in people.get_all() if "words" in i.text} == {"maya", "bob"}
    assert [i.session_id for i in people.get_all(user_id="bob") if "words" in i.text] == ["bob-s"]
    assert [m.content for m in MemOSChatMessageHistory(people, "maya-s", user_id="maya").messages] == [
        "Maya's secret words."]


def test_tool_paths_for_two_users_and_two_agents(people: MemCube) -> None:
    maya = {t.name: t for t in create_memory_tools(people, "maya", agent_id="scout")}
    bob = {t.name: t for t in create_memory_tools(people, "bob", agent_id="helper")}
    assert "9876" not in maya["search_memory"].invoke({"query": "bank PIN", "k": 20})
    assert "4321" not in bob["search_memory"].invoke({"query": "bank PIN", "k": 20})
    saved = bob["save_memory"].invoke({"text": "Bob's note."}).split()[-1].rstrip(".")
    assert "nothing was forgotten" in maya["forget_memory"].invoke({"memory_id": saved})
    assert people.get(saved).user_id == "bob" and people.get(saved).created_by == "agent:helper"
    refused = maya["search_memory"].invoke(
        {"name": "search_memory", "args": {"query": "PIN"}, "id": "1", "type": "tool_call"},
        config={"configurable": {"user_id": "maya", "agent_id": "helper"}})
    assert refused.status == "error"  # tools acting as scout do not serve helper's run


def test_middleware_paths_for_two_users_and_two_agents(people: MemCube) -> None:
    model = StandInChatModel()
    agent = create_agent(model, middleware=[MemOSMemoryMiddleware(people, k=20, max_tokens=4000, agent_id="scout")],
                         checkpointer=InMemorySaver())
    for user in ("maya", "bob"):
        agent.invoke({"messages": [HumanMessage("bank PIN? sister? brother?")]},
                     {"configurable": {"thread_id": "one-thread"}}, context={"user_id": user})
    maya_prompt, bob_prompt = model.seen_system_prompts
    assert "4321" in maya_prompt and "9876" not in maya_prompt
    assert "9876" in bob_prompt and "4321" not in bob_prompt and "Lisbon" not in bob_prompt
    assert {i.agent_id for i in people.get_all() if "agent_turn" in i.tags} == {"scout"}
    with pytest.raises(AccessDeniedError):
        agent.invoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "t2"}},
                     context={"user_id": "maya", "agent_id": "helper"})


def test_chat_model_reads_only_the_acting_users_memories(people: MemCube, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("torch")
    request.getfixturevalue("one_torch_thread")
    from memos_integrations.langchain.chat_model import MemOSChatModel
    from memos_integrations.models import LocalRuntime
    from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm

    runtime = LocalRuntime(tiny_causal_lm("gpt2"), byte_tokenizer(), cube=people, max_new_tokens=2)
    mine = {u: {i.id for i in people.get_all(user_id=u)} for u in ("maya", "bob")}
    unbound = MemOSChatModel(runtime=runtime)
    for user in ("maya", "bob"):
        reply = unbound.invoke("bank PIN?", config={"configurable": {"user_id": user, "thread_id": user}})
        used = set(reply.response_metadata["memos"]["memory_ids"])
        assert used and used <= mine[user]
    with pytest.raises(AccessDeniedError):
        MemOSChatModel(runtime=runtime, user_id="maya").invoke("PIN?", config={"configurable": {"user_id": "bob"}})
    with pytest.raises(AccessDeniedError):
        unbound.invoke("PIN?", config={"configurable": {"user_id": "bob"}}, user_id="maya")
    with pytest.raises(InvalidInputError, match="needs a user"):  # never every user's memories at once
        unbound.invoke("PIN?")


def test_a_per_call_user_never_overrides_the_runs(people: MemCube) -> None:
    unbound = MemOSRetriever(cube=people, user_id=None, k=20)
    with pytest.raises(AccessDeniedError):  # bob's run (LangGraph context) asking for maya's memories
        in_run("bob", lambda: unbound.invoke("bank PIN", user_id="maya"))
    assert users_of(in_run("bob", lambda: unbound.invoke("bank PIN", user_id="bob"))) == {"bob"}
